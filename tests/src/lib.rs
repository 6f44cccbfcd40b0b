//! Shared pieces of the end-to-end tests: real X servers, real agents, real guests.
//!
//! Every process is held by a guard that kills it on drop, display numbers come from the
//! servers themselves (`-displayfd`), and agents listen on private unix sockets or ports the
//! kernel picked, so tests run in parallel.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xbridge_proto::Key;

pub mod load;

/// Debian packages the end-to-end tests need, as one install line.
pub const APT_LINE: &str = "apt-get install -y --no-install-recommends xvfb xserver-xephyr xnest x11-apps x11-utils xauth xdotool xinit";

/// Fails the test with the install command when a program is missing.
pub fn require(program: &str) -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("`{program}` is not installed; run `cargo xtask deps` or `sudo {APT_LINE}`")
    })
}

/// A workspace binary, built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; run `cargo xtask test`, or `cargo build --workspace --bins` before `cargo test`",
        path.display()
    );
    path
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Waits for `f` to return `Some`, polling until `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A private temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("xbridge-e2e-")
        .tempdir()
        .expect("tempdir")
}

/// A real Xvfb standing in for the host display, with its own cookie.
#[derive(Debug)]
pub struct Xvfb {
    pub number: u16,
    pub cookie: Vec<u8>,
    pub xauthority: PathBuf,
    _process: Guard,
    _dir: tempfile::TempDir,
}

impl Xvfb {
    /// Kills the server, as a crash or a logout would.
    pub fn kill(&mut self) {
        let _ = self._process.0.kill();
        let _ = self._process.0.wait();
    }

    pub fn start() -> Xvfb {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Xvfb {
        let xvfb = require("Xvfb");
        let dir = tempdir();
        let xauthority = dir.path().join("host.xauth");
        let cookie: Vec<u8> = xbridge_proto::random_bytes::<16>().to_vec();
        // A wildcard entry: valid for whatever display number Xvfb picks.
        write_wild_cookie(&xauthority, &cookie);
        let (mut read, write) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let write_fd = write.as_raw_fd();
        let mut command = Command::new(xvfb);
        command
            .args(["-displayfd", &write_fd.to_string(), "-auth"])
            .arg(&xauthority)
            .args(["-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        clear_cloexec_in_child(&mut command, write_fd);
        let process = Guard(command.spawn().expect("spawn Xvfb"));
        drop(write);
        let number = read_number(&mut read, "Xvfb");
        Xvfb {
            number,
            cookie,
            xauthority,
            _process: process,
            _dir: dir,
        }
    }

    pub fn display(&self) -> String {
        format!(":{}", self.number)
    }

    /// A trusted x11rb connection, as a local desktop client.
    pub fn connect(&self) -> x11rb::rust_connection::RustConnection {
        connect_with(self.number, Some(&self.cookie))
    }
}

/// Connects to display `number` with an optional MIT cookie.
pub fn connect_with(number: u16, cookie: Option<&[u8]>) -> x11rb::rust_connection::RustConnection {
    try_connect_with(number, cookie).unwrap_or_else(|e| panic!("cannot connect to :{number}: {e}"))
}

pub fn try_connect_with(
    number: u16,
    cookie: Option<&[u8]>,
) -> Result<x11rb::rust_connection::RustConnection, String> {
    use x11rb::rust_connection::{DefaultStream, RustConnection};
    let addr = x11rb_protocol_address(number);
    let (stream, _) = DefaultStream::connect(&addr).map_err(|e| e.to_string())?;
    let (name, data) = match cookie {
        Some(c) => (b"MIT-MAGIC-COOKIE-1".to_vec(), c.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    RustConnection::connect_to_stream_with_auth_info(stream, 0, name, data)
        .map_err(|e| e.to_string())
}

fn x11rb_protocol_address(number: u16) -> x11rb_protocol::parse_display::ConnectAddress<'static> {
    x11rb_protocol::parse_display::ConnectAddress::Socket(format!("/tmp/.X11-unix/X{number}"))
}

/// Writes an Xauthority file with one FamilyWild MIT-MAGIC-COOKIE-1 entry for every display.
pub fn write_wild_cookie(path: &Path, cookie: &[u8]) {
    let mut bytes = vec![0xff, 0xff, 0, 0, 0, 0, 0, 18];
    bytes.extend_from_slice(b"MIT-MAGIC-COOKIE-1");
    bytes.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
    bytes.extend_from_slice(cookie);
    std::fs::write(path, bytes).expect("write xauthority");
}

/// Keeps `fd` open across exec in the child.
pub fn clear_cloexec_in_child(command: &mut Command, fd: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: fcntl is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
}

/// Reads `N\n` written to a -displayfd.
pub fn read_number(read: &mut impl Read, who: &str) -> u16 {
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .expect("read displayfd");
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{who} wrote `{line}` to -displayfd"))
}

/// A pairing key in a private file.
pub fn key_file(dir: &Path) -> (Key, PathBuf) {
    let path = dir.join("guest.key");
    let key = Key::create(&path, false).expect("create key");
    (key, path)
}

/// A running host-agent on a private unix socket.
#[derive(Debug)]
pub struct Agent {
    pub socket: PathBuf,
    pub key: Key,
    pub key_path: PathBuf,
    pub process: Guard,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `host-agent serve` for `xvfb`, listening on a unix socket; extra args appended.
    pub fn start(xvfb: &Xvfb, extra: &[&str]) -> Agent {
        Self::start_for(&xvfb.display(), &xvfb.xauthority, extra)
    }

    /// Starts an agent for any display name and Xauthority file.
    pub fn start_for(display: &str, xauthority: &Path, extra: &[&str]) -> Agent {
        let dir = tempdir();
        let (key, key_path) = key_file(dir.path());
        let socket = dir.path().join("agent.sock");
        let process = Self::spawn(
            display,
            xauthority,
            &key_path,
            &format!("unix:{}", socket.display()),
            extra,
            dir.path(),
        );
        wait_for(Duration::from_secs(10), "host-agent to listen", || {
            std::os::unix::net::UnixStream::connect(&socket).ok()
        });
        Agent {
            socket,
            key,
            key_path,
            process,
            dir,
        }
    }

    /// Spawns an agent for `xvfb` on `listen` with `key`, logging to `logdir/agent.log`.
    pub fn spawn_on(xvfb: &Xvfb, key: &Path, listen: &str, logdir: &Path) -> Guard {
        Self::spawn(&xvfb.display(), &xvfb.xauthority, key, listen, &[], logdir)
    }

    pub fn spawn(
        display: &str,
        xauthority: &Path,
        key: &Path,
        listen: &str,
        extra: &[&str],
        logdir: &Path,
    ) -> Guard {
        let log = std::fs::File::create(logdir.join("agent.log")).expect("agent log");
        Guard(
            Command::new(bin("host-agent"))
                .args(["serve", "--listen", listen, "--key"])
                .arg(key)
                .args(["--display", display, "--xauthority"])
                .arg(xauthority)
                .args(["-v"])
                .args(extra)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn host-agent"),
        )
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// Connects to an agent's unix socket and completes the guest's handshake. Returns the stream,
/// ready for X11.
pub fn guest_stream(socket: &Path, key: &Key) -> Result<std::os::unix::net::UnixStream, String> {
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    handshake_over(stream, key)
}

/// Completes the guest's handshake on an already connected stream (a unix socket, or one end
/// of a socketpair whose other end is `host-agent stdio`). Returns it ready for X11.
pub fn handshake_over(
    stream: std::os::unix::net::UnixStream,
    key: &Key,
) -> Result<std::os::unix::net::UnixStream, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        let (_, leftover) = xbridge_proto::exchange::guest_handshake(
            &mut stream,
            key,
            "e2e",
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| e.to_string())?;
        assert!(
            leftover.is_empty(),
            "the agent sent X11 bytes before our setup request"
        );
        let std = stream.into_std().map_err(|e| e.to_string())?;
        std.set_nonblocking(false).map_err(|e| e.to_string())?;
        Ok(std)
    })
}

/// An x11rb connection over a stream that has completed the handshake, presenting no
/// credential of its own (the agent supplies the host's).
pub fn x11_over(stream: std::os::unix::net::UnixStream) -> x11rb::rust_connection::RustConnection {
    use x11rb::rust_connection::{DefaultStream, RustConnection};
    let (stream, _) = DefaultStream::from_unix_stream(stream).expect("stream");
    RustConnection::connect_to_stream_with_auth_info(stream, 0, Vec::new(), Vec::new())
        .expect("X11 setup through the agent")
}

/// An x11rb connection through the agent (handshake, then X11 with no credential of ours).
pub fn bridged(socket: &Path, key: &Key) -> x11rb::rust_connection::RustConnection {
    x11_over(guest_stream(socket, key).expect("handshake with agent"))
}

/// Whether a process still exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Descendants of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(") ")
                        .next()
                        .map(|r| r.split(' ').nth(1).map(str::to_owned))
                })
                .flatten()
                .and_then(|pp| pp.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// Raw fd helper for tests that pass descriptors.
///
/// # Safety
/// `fd` must be an open descriptor the caller owns.
pub unsafe fn file_from_fd(fd: i32) -> std::fs::File {
    // SAFETY: forwarded to the caller.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// A display number for servers started with an explicit `:N`: high enough to stay clear of
/// the ones Xvfb picks from 0 upward, unique within this test process.
pub fn free_display() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 300 + (std::process::id() % 50) as u16 * 4;
    loop {
        let n = base + NEXT.fetch_add(1, Ordering::Relaxed);
        let in_use = Path::new(&format!("/tmp/.X{n}-lock")).exists()
            || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists();
        if !in_use {
            return n;
        }
    }
}

/// A guest's `xwrap.toml` and everything it points at.
#[derive(Debug)]
pub struct GuestConfig {
    pub path: PathBuf,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl GuestConfig {
    /// Writes a config for an agent endpoint and key file; `extra` is appended TOML.
    pub fn new(endpoint: &str, key_file: &Path, extra: &str) -> GuestConfig {
        let dir = tempdir();
        let log = dir.path().join("xwrap.log");
        let path = dir.path().join("xwrap.toml");
        let text = format!(
            "agent = \"{endpoint}\"\nkey_file = \"{}\"\nlog_file = \"{}\"\nscreen = \"640x480\"\nagent_wait_s = 20\n{extra}\n",
            key_file.display(),
            log.display()
        );
        std::fs::write(&path, text).expect("write xwrap.toml");
        GuestConfig { path, log, dir }
    }

    pub fn for_agent(agent: &Agent, extra: &str) -> GuestConfig {
        Self::new(&agent.endpoint(), &agent.key_path, extra)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A display manager's `-auth` file with a fresh cookie; returns its path and cookie.
    pub fn dm_auth(&self) -> (PathBuf, Vec<u8>) {
        let path = self.dir.path().join("dm.auth");
        let cookie = xbridge_proto::random_bytes::<16>().to_vec();
        write_wild_cookie(&path, &cookie);
        (path, cookie)
    }
}

/// Spawns the wrapper as a display manager that reads `-displayfd` would.
pub fn spawn_with_displayfd(
    guest: &GuestConfig,
    display: Option<u16>,
    auth: &std::path::Path,
) -> (Guard, std::os::unix::net::UnixStream) {
    use std::os::fd::AsRawFd;
    let (read, write) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = write.as_raw_fd();
    let mut command = Command::new(bin("guest-xwrap"));
    command.arg("--config").arg(&guest.path);
    command.args(display.map(|n| format!(":{n}")));
    command
        .args(["-displayfd", &fd.to_string(), "-auth"])
        .arg(auth)
        .args(["-nolisten", "tcp", "-noreset"]);
    command.stderr(Stdio::null());
    clear_cloexec_in_child(&mut command, fd);
    let child = Guard(command.spawn().unwrap());
    drop(write);
    (child, read)
}

/// An `agent.toml` in a private directory; pass `["--config", &path]` to [`Agent::start`].
/// Keep the directory alive as long as the agent.
pub fn agent_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write agent.toml");
    (dir, path.display().to_string())
}
