//! Private X displays for the demo and the benchmark: free display numbers, cookie files,
//! and a headless Xvfb that is up before anyone connects.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Whether something answers on display `n`'s abstract socket.
pub fn abstract_up(n: u16) -> bool {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(format!("/tmp/.X11-unix/X{n}").as_bytes())
        .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a))
        .is_ok()
}

/// The first display number from `from` with no lock file, no socket file and no listener.
pub fn free_display(from: u16) -> u16 {
    (from..from + 200)
        .find(|&n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !abstract_up(n)
        })
        .unwrap_or(from)
}

/// A fresh MIT-MAGIC-COOKIE-1, as the hex `xauth` takes.
pub fn cookie_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new Xauthority file with `cookie` for each of `displays`.
pub fn xauth_file(path: &Path, cookie: &str, displays: &[u16]) -> anyhow::Result<()> {
    std::fs::File::create(path)?;
    for n in displays {
        let status = Command::new("xauth")
            .arg("-q")
            .arg("-f")
            .arg(path)
            .args(["add", &format!(":{n}"), ".", cookie])
            .status()
            .context("cannot run xauth")?;
        if !status.success() {
            bail!("xauth could not write {}", path.display());
        }
    }
    Ok(())
}

/// Starts a headless Xvfb on `:n` guarded by the `-auth` file, and waits until it listens.
pub fn start_xvfb(n: u16, xauthority: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new("Xvfb")
        .arg(format!(":{n}"))
        .arg("-auth")
        .arg(xauthority)
        .args(["-screen", "0", "1280x1024x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start Xvfb (apt-get install xvfb)")?;
    let start = Instant::now();
    while !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() && !abstract_up(n) {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("Xvfb :{n} did not come up within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}
