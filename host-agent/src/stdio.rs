//! One guest on stdin/stdout: slirp `add exec`, QEMU `guestfwd=…-cmd:`, `ssh host host-agent stdio`.
//!
//! Under slirp and QEMU all three standard descriptors are the guest's socket, so this mode
//! points stderr at /dev/null before anything could write there.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::{AsyncRead, AsyncWrite};
use xbridge_proto::stream::BoxStream;

/// Makes fd 2 /dev/null so no library, panic or clap message can reach the guest's socket.
pub fn silence_stderr() -> io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: dup2 onto fd 2 with a valid descriptor; the old stderr is simply replaced.
    if unsafe { libc::dup2(null.as_raw_fd(), 2) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat fills a plain struct; fd validity is checked by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK }
}

/// A private non-blocking duplicate of a socket descriptor, as a tokio stream.
fn socket_stream(fd: RawFd) -> io::Result<tokio::net::UnixStream> {
    // SAFETY: dup of a descriptor we were given; the duplicate is ours to own.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor referring to a stream socket.
    let std = unsafe { std::os::unix::net::UnixStream::from(OwnedFd::from_raw_fd(dup)) };
    std.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std)
}

/// stdin and stdout as one stream. Sockets (slirp, QEMU) are driven directly; pipes (ssh) go
/// through tokio's blocking stdio.
pub fn stdio_stream() -> io::Result<BoxStream> {
    let reader: Box<dyn AsyncRead + Unpin + Send> = if is_socket(0) {
        Box::new(socket_stream(0)?)
    } else {
        Box::new(tokio::io::stdin())
    };
    let writer: Box<dyn AsyncWrite + Unpin + Send> = if is_socket(1) {
        Box::new(socket_stream(1)?)
    } else {
        Box::new(tokio::io::stdout())
    };
    Ok(Box::new(tokio::io::join(reader, writer)))
}
