//! AF_VSOCK listening, which neither std nor tokio offers.
//!
//! Accepted connections are ordinary stream sockets, so they are driven as tokio unix
//! streams: reads, writes and shutdown are the same system calls whatever the family.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

/// A listening vsock socket.
#[derive(Debug)]
pub struct VsockListener {
    fd: AsyncFd<OwnedFd>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl VsockListener {
    /// Binds `cid:port` (use `u32::MAX`, VMADDR_CID_ANY, to accept from any VM).
    pub fn bind(cid: u32, port: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_VSOCK,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_vm is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = cid;
        addr.svm_port = port;
        // SAFETY: addr is a valid sockaddr_vm and the length matches it.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        })?;
        // SAFETY: listen on a bound socket we own.
        check(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
        Self::from_fd(fd)
    }

    /// Wraps an already listening vsock socket (systemd socket activation).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: setting O_NONBLOCK on a descriptor we own.
        unsafe {
            let flags = check(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
            check(libc::fcntl(
                fd.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            ))?;
        }
        // SAFETY: the AsyncFd owns the descriptor, so it stays open exactly as long as it is registered.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(VsockListener { fd })
    }

    /// Accepts one connection; returns it and the peer's `cid:port`.
    pub async fn accept(&self) -> io::Result<(UnixStream, String)> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: sockaddr_vm is plain data.
            let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
            // SAFETY: addr/len describe a writable sockaddr_vm buffer.
            let rc = unsafe {
                libc::accept4(
                    self.fd.get_ref().as_raw_fd(),
                    (&mut addr as *mut libc::sockaddr_vm).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(err);
            }
            // SAFETY: accept4 returned a fresh connected descriptor that we now own.
            let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(rc) };
            let peer = format!("vsock:{}:{}", addr.svm_cid, addr.svm_port);
            return Ok((UnixStream::from_std(std_stream)?, peer));
        }
    }
}
