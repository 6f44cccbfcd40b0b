//! The measurements themselves: x11perf rates, readiness times, and a process's memory, CPU
//! time and bytes read, from /proc.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use xbridge_proto::setup::{ByteOrder, SetupRequest};
use xbridge_proto::xauthority::MIT_MAGIC_COOKIE_1;

/// x11perf's rate (operations per second) for one test on one display, and the operations it
/// counted. A fixed repetition count skips x11perf's calibration, which costs more than the
/// measurement.
pub fn x11perf(
    display: &str,
    xauthority: &Path,
    test: &str,
    scale: u32,
) -> anyhow::Result<(f64, u64)> {
    let reps = match test {
        "-prop" => 2000,
        "-putimage100" | "-getimage100" => 1000,
        _ => 100,
    } * scale;
    let out = Command::new("x11perf")
        .args(["-repeat", "1", "-reps", &reps.to_string(), test])
        .env("DISPLAY", display)
        .env("XAUTHORITY", xauthority)
        .output()
        .context("cannot run x11perf (apt-get install x11-apps)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `   400 reps @   3.6567 msec (   273.0/sec): PutImage 500x500 square`
    let rate = text
        .lines()
        .filter(|l| l.contains("reps @"))
        .filter_map(|l| {
            let ops = l.split_whitespace().next()?.parse::<u64>().ok()?;
            let rate = l.split('(').nth(1)?.split('/').next()?.trim();
            Some((rate.parse::<f64>().ok()?, ops))
        })
        .next_back();
    rate.with_context(|| {
        format!(
            "x11perf {test} on {display} printed no rate:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// When a server was ready, in ms from spawn: when it said so (`-displayfd`), and when it
/// had served a client's connection setup (with `cookie`, if it wants one).
pub struct Ready {
    pub signalled: f64,
    pub served: f64,
    /// Connection attempts refused after the signal (there should be none).
    pub refused: u32,
}

/// Spawns an X server (or guest-xwrap) with `-displayfd` and times both kinds of ready.
pub fn readiness(
    program: &Path,
    args: &[String],
    env: &[(&str, &Path)],
    cookie: Option<&[u8]>,
) -> anyhow::Result<Ready> {
    let (read, write) = std::os::unix::net::UnixStream::pair()?;
    let fd = write.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(["-displayfd", &fd.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SIGUSR1 stays at its default, so nobody signals us: `-displayfd` is written at the same
    // moment (xorg's NotifyParentProcess) and is what is timed.
    // SAFETY: fcntl is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    drop(write);
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line)?;
    let signalled = start.elapsed().as_secs_f64() * 1000.0;
    let served = line
        .trim()
        .parse::<u16>()
        .with_context(|| format!("{} wrote `{line}` to -displayfd", program.display()))
        .and_then(|n| first_client_served(n, cookie))
        .map(|refused| (start.elapsed().as_secs_f64() * 1000.0, refused));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let (served, refused) = served?;
    Ok(Ready {
        signalled,
        served,
        refused,
    })
}

/// Connects to display `n` and completes an X11 connection setup, retrying briefly while the
/// server refuses (a server may announce itself before it serves). Returns the refusals.
fn first_client_served(n: u16, cookie: Option<&[u8]>) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    loop {
        match try_setup(n, cookie) {
            Ok(()) => return Ok(refused),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("display :{n} served no client in 10 s"))
            }
            Err(_) => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn try_setup(n: u16, cookie: Option<&[u8]>) -> anyhow::Result<()> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(
        format!("/tmp/.X11-unix/X{n}").as_bytes(),
    )?;
    let mut s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    let (auth_name, auth_data) = match cookie {
        Some(c) => (MIT_MAGIC_COOKIE_1.to_vec(), c.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    let request = SetupRequest {
        byte_order: ByteOrder::native(),
        major: 11,
        minor: 0,
        auth_name,
        auth_data,
    }
    .encode();
    s.write_all(&request)?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    if head[0] != 1 {
        bail!("setup status {}", head[0]);
    }
    let mut rest = vec![0u8; u16::from_le_bytes([head[6], head[7]]) as usize * 4];
    s.read_exact(&mut rest)?;
    Ok(())
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0.0)
}

/// A process's CPU time (user + system, all threads), and the bytes it forwarded meanwhile
/// (known from the work done: /proc's `rchar` does not count socket `recv`s).
#[derive(Clone, Copy, Default)]
pub struct Cost {
    pub cpu_s: f64,
    pub bytes: u64,
}

impl Cost {
    pub fn of(pid: u32) -> anyhow::Result<Cost> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which may itself hold spaces: state is field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("odd /proc stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(Cost {
            cpu_s: ticks / hz,
            bytes: 0,
        })
    }

    /// The CPU time spent since `before`, for `bytes` forwarded.
    pub fn since(self, before: Cost, bytes: u64) -> Cost {
        Cost {
            cpu_s: self.cpu_s - before.cpu_s,
            bytes,
        }
    }

    pub fn add(&mut self, other: Cost) {
        self.cpu_s += other.cpu_s;
        self.bytes += other.bytes;
    }

    pub fn gib(&self) -> f64 {
        self.bytes as f64 / (1u64 << 30) as f64
    }

    pub fn per_gib(&self) -> f64 {
        self.cpu_s / self.gib()
    }
}

/// `xbridge-load CLIENTS ROUNDS` on a display: wall seconds and bytes moved each way, or why
/// it failed.
pub fn load(
    bin: &Path,
    display: &str,
    xauthority: &Path,
    clients: u32,
    rounds: u32,
) -> anyhow::Result<(f64, u64)> {
    let out = Command::new(bin.join("xbridge-load"))
        .args([clients.to_string(), rounds.to_string()])
        .env("DISPLAY", display)
        .env("XAUTHORITY", xauthority)
        .output()
        .context("cannot run xbridge-load")?;
    if !out.status.success() {
        bail!(
            "xbridge-load {clients} {rounds} on {display} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("xbridge-load printed `{text}`"))?;
    match (json["seconds"].as_f64(), json["bytes_each_way"].as_u64()) {
        (Some(secs), Some(bytes)) => Ok((secs, bytes)),
        _ => bail!("xbridge-load printed `{text}`"),
    }
}
