//! The nested server as a child process: spawning it the way an X server expects to be
//! spawned, and mirroring how it ended.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::process::{Child, Command};

/// A pipe for the nested server's `-displayfd`: it writes its display number when ready.
#[derive(Debug)]
pub struct DisplayFdPipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl DisplayFdPipe {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and ours.
        Ok(unsafe {
            DisplayFdPipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }
}

/// Spawns the nested server with SIGUSR1 ignored (so it signals us when ready and after each
/// reset), a parent-death SIGTERM, and `inherit_fd` kept open across exec.
pub fn spawn(
    program: &Path,
    argv: &[String],
    env: &[(&str, &Path)],
    inherit_fd: RawFd,
) -> io::Result<Child> {
    let mut command = Command::new(program);
    command
        .args(argv)
        .env("XEPHYR_NO_SHM", "1")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    // SAFETY: only async-signal-safe calls (signal, prctl, fcntl, sigprocmask) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::fcntl(inherit_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Asks the kernel to send us SIGTERM when our parent (the display manager) dies, so the
/// nested server is stopped with us.
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
    }
}

/// Sends a signal to a process.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Ends this process the way the child ended: same exit code, or the same signal.
pub fn mirror_exit(status: ExitStatus) -> ! {
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    let signal = status.signal().unwrap_or(libc::SIGTERM);
    // SAFETY: restoring the default action and raising; if the signal does not end us, we exit.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

/// Keeps the write end's number alive for `spawn`; the parent closes it after spawning.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
