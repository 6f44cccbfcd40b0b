//! What xbridge is measured against, each reaching the same host display: `socat` (the seed's
//! hand-made byte pump), a plain two-hop pump with xbridge's shape but no authentication (the
//! floor for two hops), and OpenSSH X11 forwarding on loopback, trusted and untrusted (what most
//! people reach for).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// `socat` relaying the abstract X socket of display `listen` to display `host`.
pub fn socat(listen: u16, host: u16) -> anyhow::Result<Child> {
    Command::new("socat")
        .arg(format!("ABSTRACT-LISTEN:/tmp/.X11-unix/X{listen},fork"))
        .arg(format!("ABSTRACT-CONNECT:/tmp/.X11-unix/X{host}"))
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start socat (apt-get install socat)")
}

fn x_socket(n: u16) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("/tmp/.X11-unix/X{n}").as_bytes())
}

/// Two plain pumps in a row, as xbridge has: display `listen` (guest side) → TCP loopback →
/// display `host` (host side). Blocking threads, 64 KiB buffers, `TCP_NODELAY`, nothing else:
/// whatever xbridge costs beyond this is its own. The pumps live as long as this process.
pub fn plain_two_hop_pump(listen: u16, host: u16) -> anyhow::Result<()> {
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let port = tcp.local_addr()?.port();
    let unix = UnixListener::bind_addr(&x_socket(listen)?)
        .with_context(|| format!("display :{listen} for the plain pump"))?;
    std::thread::spawn(move || {
        for guest in tcp.incoming().map_while(Result::ok) {
            let Ok(display) = UnixStream::connect_addr(&x_socket(host).expect("name")) else {
                continue;
            };
            let _ = guest.set_nodelay(true);
            pump(guest, display);
        }
    });
    std::thread::spawn(move || {
        for client in unix.incoming().map_while(Result::ok) {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let _ = upstream.set_nodelay(true);
            pump(client, upstream);
        }
    });
    Ok(())
}

trait Duplex: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> std::io::Result<Self>;
    fn shutdown_write(&self);
}

impl Duplex for TcpStream {
    fn try_clone(&self) -> std::io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Duplex for UnixStream {
    fn try_clone(&self) -> std::io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

fn pump(a: impl Duplex, b: impl Duplex) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    std::thread::spawn(move || one_way(a, b2));
    std::thread::spawn(move || one_way(b, a2));
}

fn one_way(mut from: impl Duplex, mut to: impl Duplex) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    to.shutdown_write();
}

/// A private `sshd` on a loopback port, for X11 forwarding from this machine to itself. Its
/// host key, authorized key and the Xauthority file its sessions write are all under `dir`.
pub struct Sshd {
    process: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Sshd {
    pub fn start(dir: &Path) -> anyhow::Result<Sshd> {
        if !Path::new("/usr/sbin/sshd").exists() {
            bail!("no /usr/sbin/sshd (apt-get install openssh-server openssh-client)");
        }
        std::fs::create_dir_all(dir)?;
        for key in ["host", "id"] {
            let _ = std::fs::remove_file(dir.join(key));
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(dir.join(key))
                .status()
                .context("cannot run ssh-keygen (apt-get install openssh-client)")?;
            if !status.success() {
                bail!("ssh-keygen failed");
            }
        }
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys"))?;
        // sshd runs `xauth` for each session; this one writes to our file, not to ~/.Xauthority.
        let xauth = dir.join("xauth");
        std::fs::write(
            &xauth,
            format!(
                "#!/bin/sh\nXAUTHORITY='{}' exec /usr/bin/xauth \"$@\"\n",
                dir.join("remote.xauth").display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&xauth, std::fs::Permissions::from_mode(0o755))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile none\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nX11Forwarding yes\nX11UseLocalhost yes\nX11DisplayOffset 300\n\
                 XAuthLocation {xauth}\n",
                host = dir.join("host").display(),
                dir = dir.display(),
                xauth = xauth.display(),
            ),
        )?;
        // As root, sshd's privilege separation needs its (Debian-created at boot) directory.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::fs::create_dir_all("/run/sshd")?;
        }
        let mut process = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start sshd")?;
        let mut lines = BufReader::new(process.stderr.take().expect("piped")).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Server listening") => break,
                Some(Ok(line)) => said.push(line),
                _ => {
                    let _ = process.kill();
                    let _ = process.wait();
                    bail!("sshd did not start: {}", said.join(" / "));
                }
            }
        }
        // Keep draining sshd's log so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Sshd {
            process,
            dir: dir.to_owned(),
            port,
        })
    }

    /// The Xauthority file the forwarded displays' cookies are written to.
    pub fn xauthority(&self) -> PathBuf {
        self.dir.join("remote.xauth")
    }

    /// `ssh -X` (untrusted) or `ssh -Y` (trusted) to ourselves from the host display, held
    /// open; returns the session and the forwarded `DISPLAY`.
    pub fn forward(
        &self,
        trusted: bool,
        host: u16,
        host_xauthority: &Path,
    ) -> anyhow::Result<(Child, String)> {
        // SAFETY: getuid/getpwuid read process state; the name is copied at once.
        let user = unsafe {
            let pw = libc::getpwuid(libc::getuid());
            if pw.is_null() {
                bail!("no passwd entry for this user");
            }
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned()
        };
        let mut session = Command::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(self.dir.join("id"))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "LogLevel=ERROR",
                if trusted { "-Y" } else { "-X" },
                "-p",
                &self.port.to_string(),
                &format!("{user}@127.0.0.1"),
                "echo $DISPLAY; exec sleep 86400",
            ])
            .env("DISPLAY", format!(":{host}"))
            .env("XAUTHORITY", host_xauthority)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run ssh (apt-get install openssh-client)")?;
        let mut display = String::new();
        BufReader::new(session.stdout.take().expect("piped")).read_line(&mut display)?;
        let display = display.trim().to_owned();
        if !display.contains(':') {
            let _ = session.kill();
            let _ = session.wait();
            bail!("ssh -{} set no DISPLAY", if trusted { 'Y' } else { 'X' });
        }
        Ok((session, display))
    }
}
