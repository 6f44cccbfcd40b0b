//! Knowing when the nested server really accepts connections, and telling the display manager.
//!
//! The probe is the greeter's own first step: an X11 connection authenticated with the cookie
//! from the `-auth` file the display manager passed. Only when it succeeds is the display
//! manager told — by SIGUSR1 from our own pid (LightDM and GDM check the sender) and by `N\n`
//! on its `-displayfd`.

use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;

use x11rb::rust_connection::{DefaultStream, RustConnection};
use x11rb_protocol::parse_display::ConnectAddress;
use xbridge_proto::xauthority::{server_cookie, MIT_MAGIC_COOKIE_1};

/// Whether SIGUSR1 was ignored when this process started: a display manager's way of asking
/// to be signalled. Must be read before anything installs a handler.
pub fn parent_wants_sigusr1() -> bool {
    // SAFETY: querying (not changing) the disposition; `old` is plain data filled by the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The credential a client of the nested display presents: the display manager's cookie.
pub fn client_cookie(auth_file: Option<&Path>, display: u16) -> std::io::Result<Option<Vec<u8>>> {
    match auth_file {
        Some(path) => server_cookie(path, display),
        None => Ok(None),
    }
}

/// One connection attempt to display `number`, as an X client. Blocking.
pub fn probe(number: u16, cookie: Option<&[u8]>) -> Result<(), String> {
    let path = format!("/tmp/.X11-unix/X{number}");
    let (stream, _) =
        DefaultStream::connect(&ConnectAddress::Socket(path)).map_err(|e| e.to_string())?;
    let (name, data) = match cookie {
        Some(c) => (MIT_MAGIC_COOKIE_1.to_vec(), c.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    RustConnection::connect_to_stream_with_auth_info(stream, 0, name, data)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// SIGUSR1 to our parent, sent by us.
pub fn signal_parent() {
    // SAFETY: getppid and kill have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getppid(), libc::SIGUSR1);
    }
}

/// Writes `N\n` to the display manager's `-displayfd` and closes it.
pub fn write_displayfd(fd: RawFd, number: u16) -> std::io::Result<()> {
    // SAFETY: the display manager handed us this descriptor to write once and close.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(format!("{number}\n").as_bytes())
}

/// Keeps an inherited descriptor from leaking into the nested server, so the display manager
/// sees EOF if we exit.
pub fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number; errors are reported, not undefined.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
