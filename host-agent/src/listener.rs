//! Where guests connect: TCP (loopback unless told), unix sockets, vsock, and sockets
//! handed over by systemd.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};
use xbridge_proto::stream::BoxStream;
use xbridge_proto::Endpoint;

use crate::display::is_loopback_host;
use crate::vsock::VsockListener;

/// Why an address could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("refusing to listen on {endpoint}: it is reachable from other machines; pass --allow-remote if that is really wanted (a slirp or QEMU guest reaches tcp:127.0.0.1 already)")]
    Remote { endpoint: Endpoint },
    #[error("cannot listen on {endpoint}: {cause}{hint}")]
    Bind {
        endpoint: Endpoint,
        cause: io::Error,
        hint: &'static str,
    },
    #[error("`stdio` is not a listening address; run `host-agent stdio` for one connection on stdin/stdout")]
    Stdio,
    #[error(
        "systemd passed socket {fd}, which is not a listening TCP, unix or vsock stream socket"
    )]
    Activation { fd: RawFd },
}

/// Removes a unix socket file when the listener goes away.
#[derive(Debug)]
pub struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, Option<Unlink>),
    Vsock(VsockListener),
}

impl Listener {
    /// Binds an endpoint. Non-loopback TCP needs `allow_remote`.
    pub async fn bind(endpoint: &Endpoint, allow_remote: bool) -> Result<Self, ListenError> {
        let bind_err = |source: io::Error| {
            let hint = match source.kind() {
                io::ErrorKind::AddrInUse => {
                    " — another host-agent may already be running; stop it or pick another port"
                }
                io::ErrorKind::PermissionDenied => " — choose a path or port you may use",
                _ => "",
            };
            ListenError::Bind {
                endpoint: endpoint.clone(),
                cause: source,
                hint,
            }
        };
        match endpoint {
            Endpoint::Tcp { host, port } => {
                if !allow_remote && !is_loopback_host(host) {
                    return Err(ListenError::Remote {
                        endpoint: endpoint.clone(),
                    });
                }
                let listener = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(bind_err)?;
                Ok(Listener::Tcp(listener))
            }
            Endpoint::Unix(path) => {
                // A stale socket from a crashed agent would block the bind; a live one answers.
                if std::os::unix::net::UnixStream::connect(path).is_err() {
                    let _ = std::fs::remove_file(path);
                }
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(bind_err)?;
                Ok(Listener::Unix(listener, Some(Unlink(path.clone()))))
            }
            Endpoint::Vsock { cid, port } => Ok(Listener::Vsock(
                VsockListener::bind(*cid, *port).map_err(bind_err)?,
            )),
            Endpoint::Stdio => Err(ListenError::Stdio),
        }
    }

    /// Takes the sockets systemd passed (`LISTEN_PID`, `LISTEN_FDS`), if they are for us.
    pub fn from_systemd() -> Result<Vec<Self>, ListenError> {
        const FIRST_FD: RawFd = 3;
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let count: RawFd = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        if !for_us {
            return Ok(Vec::new());
        }
        (FIRST_FD..FIRST_FD + count).map(Self::from_fd).collect()
    }

    fn from_fd(fd: RawFd) -> Result<Self, ListenError> {
        let wrong = || ListenError::Activation { fd };
        // SAFETY: sockaddr_storage is plain data and large enough for any family.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: addr/len describe a writable buffer; fd is checked by the call itself.
        if unsafe {
            libc::getsockname(
                fd,
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        } != 0
        {
            return Err(wrong());
        }
        // SAFETY: systemd hands these descriptors to us, to own from now on.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = match addr.ss_family as libc::c_int {
            libc::AF_INET | libc::AF_INET6 => {
                let std = std::net::TcpListener::from(owned);
                std.set_nonblocking(true).map_err(|_| wrong())?;
                Listener::Tcp(TcpListener::from_std(std).map_err(|_| wrong())?)
            }
            libc::AF_UNIX => {
                let std = std::os::unix::net::UnixListener::from(owned);
                std.set_nonblocking(true).map_err(|_| wrong())?;
                Listener::Unix(UnixListener::from_std(std).map_err(|_| wrong())?, None)
            }
            libc::AF_VSOCK => Listener::Vsock(VsockListener::from_fd(owned).map_err(|_| wrong())?),
            _ => return Err(wrong()),
        };
        Ok(listener)
    }

    /// Accepts one guest; returns its stream and a description of the peer for logs.
    pub async fn accept(&self) -> io::Result<(BoxStream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Box::new(stream), format!("tcp:{peer}")))
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), "unix".to_owned()))
            }
            Listener::Vsock(l) => {
                let (stream, peer) = l.accept().await?;
                Ok((Box::new(stream), peer))
            }
        }
    }

    /// The bound address, for logs and for tests that bind port 0.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp:{a}"))
                .unwrap_or_else(|_| "tcp".into()),
            Listener::Unix(l, _) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
            Listener::Vsock(_) => "vsock".into(),
        }
    }
}
