//! The proxy display: a guest-local X11 socket the nested server connects to, where each
//! connection is checked against a private cookie and then carried to the host agent.
//!
//! The socket is abstract (any guest user can reach it), so the cookie is what keeps other
//! guest users off the host display. A wrong cookie gets a proper X11 `Failed` reply.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use xbridge_proto::setup::read_setup_request;
use xbridge_proto::stream::pump;
use xbridge_proto::xauthority::{write_cookie_file, MIT_MAGIC_COOKIE_1};
use xbridge_proto::{Endpoint, Key};

use crate::agent;

const SETUP_DEADLINE: Duration = Duration::from_secs(10);

/// A bound proxy display and the private Xauthority file that unlocks it.
#[derive(Debug)]
pub struct ProxyDisplay {
    pub number: u16,
    listener: UnixListener,
    cookie: [u8; 16],
    dir: tempfile::TempDir,
}

impl ProxyDisplay {
    /// Binds the first free display number from `start` (abstract sockets bind atomically, so
    /// two wrappers never share one) and writes a fresh cookie to a private file.
    pub fn bind(start: u16) -> io::Result<Self> {
        let (number, listener) = (start..start.saturating_add(500))
            .filter(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists())
            .find_map(|n| bind_abstract(n).ok().map(|l| (n, l)))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("no free proxy display from :{start}"),
                )
            })?;
        Self::with_listener(number, listener)
    }

    /// Binds exactly display `number`.
    pub fn bind_exact(number: u16) -> io::Result<Self> {
        Self::with_listener(number, bind_abstract(number)?)
    }

    fn with_listener(number: u16, listener: UnixListener) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("xbridge-xwrap-")
            .tempdir()?;
        let cookie: [u8; 16] = xbridge_proto::random_bytes();
        write_cookie_file(&dir.path().join("Xauthority"), number, &cookie)?;
        Ok(ProxyDisplay {
            number,
            listener,
            cookie,
            dir,
        })
    }

    /// The private Xauthority file holding the proxy cookie.
    pub fn xauthority(&self) -> PathBuf {
        self.dir.path().join("Xauthority")
    }

    /// The directory holding private files; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Serves connections until the future is dropped.
    pub async fn serve(self: Arc<Self>, endpoint: Endpoint, key: Key) {
        let (endpoint, key) = (Arc::new(endpoint), Arc::new(key));
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("proxy display :{} accept failed: {e}", self.number);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (me, endpoint, key) = (Arc::clone(&self), Arc::clone(&endpoint), Arc::clone(&key));
            tokio::spawn(async move {
                if let Err(e) = me.carry(stream, &endpoint, &key).await {
                    tracing::warn!("proxy connection ended: {e}");
                }
            });
        }
    }

    async fn carry(
        &self,
        mut client: UnixStream,
        endpoint: &Endpoint,
        key: &Key,
    ) -> anyhow::Result<()> {
        let (request, rest) =
            tokio::time::timeout(SETUP_DEADLINE, read_setup_request(&mut client, Vec::new()))
                .await??;
        let authorized = request.auth_name == MIT_MAGIC_COOKIE_1
            && bool::from(request.auth_data.ct_eq(&self.cookie));
        if !authorized {
            let reply = request.failed_reply("xbridge proxy display: wrong or missing MIT-MAGIC-COOKIE-1 (use the XAUTHORITY guest-xwrap printed)");
            client.write_all(&reply).await?;
            anyhow::bail!("refused a client without the proxy cookie");
        }
        let (mut upstream, _, leftover) = agent::open(endpoint, key).await?;
        // The agent substitutes the host credential; ours stays here.
        upstream
            .write_all(&request.with_auth(b"", b"").encode())
            .await?;
        upstream.write_all(&rest).await?;
        client.write_all(&leftover).await?;
        let (up, down) = pump(&mut client, &mut upstream).await?;
        tracing::debug!(up, down, "proxy connection closed");
        Ok(())
    }
}

fn bind_abstract(number: u16) -> io::Result<UnixListener> {
    let name = format!("/tmp/.X11-unix/X{number}");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let std = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    std.set_nonblocking(true)?;
    UnixListener::from_std(std)
}
