//! `cargo xtask bench [--quick] [--smoke]`: readiness, round trip and bulk, and the agent's
//! own cost, each measured side by side with its baseline in the same run, alternating the
//! configurations round by round. Writes `target/bench/report.md` and `report.json`.
//!
//! Baselines: bare Xephyr/Xnest against the host display (readiness), and for traffic the host
//! display directly, and a plain `socat` byte pump (what the seed's author built by hand).
//! Not measured yet: OpenSSH X11 forwarding, CPU per GiB, the 200-client scale run.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::project_root;
use crate::xdisplay::{cookie_hex, free_display, start_xvfb, xauth_file};

struct Killer(Vec<Child>);

impl Drop for Killer {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Copy)]
struct Options {
    quick: bool,
    smoke: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One measured row: median with min–max.
struct Stat {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Stat {
    fn summary(&self) -> (f64, f64, f64) {
        let mut v = self.samples.clone();
        let med = median(&mut v);
        (med, v[0], v[v.len() - 1])
    }
}

/// x11perf's rate (operations per second) for one test on one display. A fixed repetition
/// count skips x11perf's calibration, which costs more than the measurement.
fn x11perf(display: u16, xauthority: &Path, test: &str, scale: u32) -> anyhow::Result<f64> {
    let reps = match test {
        "-prop" => 2000,
        "-putimage100" | "-getimage100" => 1000,
        _ => 100,
    } * scale;
    let out = Command::new("x11perf")
        .args(["-repeat", "1", "-reps", &reps.to_string(), test])
        .env("DISPLAY", format!(":{display}"))
        .env("XAUTHORITY", xauthority)
        .output()
        .context("cannot run x11perf (apt-get install x11-apps)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .filter(|l| l.contains("reps @"))
        .filter_map(|l| {
            l.split('(')
                .nth(1)?
                .split('/')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .next_back();
    rate.with_context(|| {
        format!(
            "x11perf {test} on :{display} printed no rate:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Time from spawn until the server writes its display number to `-displayfd`.
fn readiness(program: &Path, args: &[String], env: &[(&str, &Path)]) -> anyhow::Result<f64> {
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
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    if line.trim().parse::<u16>().is_err() {
        bail!("{} wrote `{line}` to -displayfd", program.display());
    }
    Ok(elapsed)
}

fn rss_kib(pid: u32) -> f64 {
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

pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let o = Options {
        quick: args.iter().any(|a| a == "--quick"),
        smoke: args.iter().any(|a| a == "--smoke"),
    };
    let root = project_root();
    let out_dir = root.join("target/bench");
    let work = out_dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("bench: building release binaries");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "--bins"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let bin = root.join("target/release");
    let mut procs = Killer(Vec::new());

    // The host display and the displays that lead to it.
    let host = free_display(140);
    let socat_display = free_display(host + 1);
    let proxy_display = free_display(socat_display + 1);
    let stdio_display = free_display(proxy_display + 1);
    let cookie = cookie_hex()?;
    let xauthority = work.join("host.xauth");
    xauth_file(&xauthority, &cookie, &[host, socat_display])?;
    procs.0.push(start_xvfb(host, &xauthority)?);
    procs.0.push(
        Command::new("socat")
            .arg(format!(
                "ABSTRACT-LISTEN:/tmp/.X11-unix/X{socat_display},fork"
            ))
            .arg(format!("ABSTRACT-CONNECT:/tmp/.X11-unix/X{host}"))
            .stderr(Stdio::null())
            .spawn()
            .context("socat (apt-get install socat)")?,
    );
    let key = work.join("key/guest.key");
    Command::new(bin.join("host-agent"))
        .arg("init")
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::null())
        .status()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let agent = Command::new(bin.join("host-agent"))
        .args([
            "serve",
            "--listen",
            &format!("tcp:127.0.0.1:{port}"),
            "--key",
        ])
        .arg(&key)
        .args(["--display", &format!(":{host}"), "--xauthority"])
        .arg(&xauthority)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    let agent_pid = agent.id();
    procs.0.push(agent);
    // `host-agent stdio` per connection, as slirp `add exec` and QEMU guestfwd start it.
    let stdio_socket = work.join("stdio.sock");
    let listener = std::os::unix::net::UnixListener::bind(&stdio_socket)?;
    let (agent_bin, key2, xa2) = (bin.join("host-agent"), key.clone(), xauthority.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let Ok(dup) = conn.try_clone() else { continue };
            let _ = Command::new(&agent_bin)
                .arg("stdio")
                .arg("--key")
                .arg(&key2)
                .args(["--display", &format!(":{host}"), "--xauthority"])
                .arg(&xa2)
                .stdin(Stdio::from(OwnedFd::from(conn)))
                .stdout(Stdio::from(OwnedFd::from(dup)))
                .spawn();
        }
    });
    let mut proxy_env = Vec::new();
    for (n, agent_at, name) in [
        (proxy_display, format!("tcp:127.0.0.1:{port}"), "tcp"),
        (
            stdio_display,
            format!("unix:{}", stdio_socket.display()),
            "stdio",
        ),
    ] {
        let config = work.join(format!("xwrap-{name}.toml"));
        std::fs::write(
            &config,
            format!("agent = \"{agent_at}\"\nkey_file = \"{}\"\n", key.display()),
        )?;
        let mut proxy = Command::new(bin.join("guest-xwrap"))
            .args(["proxy", "--display", &format!(":{n}"), "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(proxy.stdout.take().expect("piped")).lines();
        let _display = lines.next().context("proxy printed nothing")??;
        let xa = PathBuf::from(
            lines
                .next()
                .context("proxy printed no XAUTHORITY")??
                .trim_start_matches("XAUTHORITY=")
                .to_owned(),
        );
        proxy_env.push(xa);
        procs.0.push(proxy);
    }
    let idle_rss = rss_kib(agent_pid);

    // Traffic: every configuration once per round, rounds alternating.
    let (rounds, scale) = match (o.smoke, o.quick) {
        (true, _) => (1, 1),
        (false, true) => (3, 1),
        (false, false) => (5, 3),
    };
    let tests = [
        "-prop",
        "-putimage100",
        "-getimage100",
        "-putimage500",
        "-getimage500",
    ];
    let tests: &[&str] = if o.smoke { &tests[..2] } else { &tests };
    let paths: Vec<(&str, u16, PathBuf)> = vec![
        ("direct", host, xauthority.clone()),
        ("socat", socat_display, xauthority.clone()),
        ("xbridge tcp", proxy_display, proxy_env[0].clone()),
        ("xbridge stdio", stdio_display, proxy_env[1].clone()),
    ];
    let mut traffic: Vec<Stat> = Vec::new();
    for test in tests {
        for (name, _, _) in &paths {
            traffic.push(Stat {
                name: format!("{test} {name}"),
                unit: "ops/s",
                samples: Vec::new(),
            });
        }
    }
    for round in 0..rounds {
        println!("bench: traffic round {}/{rounds}", round + 1);
        for (t, test) in tests.iter().enumerate() {
            for (p, (_, display, xa)) in paths.iter().enumerate() {
                let rate = x11perf(*display, xa, test, scale)?;
                traffic[t * paths.len() + p].samples.push(rate);
            }
        }
    }

    // Readiness: bare nested servers against the host display versus guest-xwrap through the agent.
    let runs = if o.smoke {
        2
    } else if o.quick {
        5
    } else {
        20
    };
    let mut ready: Vec<Stat> = Vec::new();
    let guest_config = work.join("xwrap-ready.toml");
    let dm_auth = work.join("dm.xauth");
    xauth_file(&dm_auth, &cookie_hex()?, &[0])?;
    for server in ["Xephyr", "Xnest"] {
        std::fs::write(&guest_config, format!("agent = \"tcp:127.0.0.1:{port}\"\nkey_file = \"{}\"\nserver = \"{server}\"\nscreen = \"800x600\"\nlog_file = \"{}\"\n", key.display(), work.join("xwrap.log").display()))?;
        let mut bare = Stat {
            name: format!("{server} bare"),
            unit: "ms",
            samples: Vec::new(),
        };
        let mut wrapped = Stat {
            name: format!("{server} via guest-xwrap"),
            unit: "ms",
            samples: Vec::new(),
        };
        let host_display = PathBuf::from(format!(":{host}"));
        for _ in 0..runs {
            let extra: Vec<String> = if server == "Xephyr" {
                vec!["-screen".into(), "800x600".into()]
            } else {
                vec!["-geometry".into(), "800x600".into()]
            };
            bare.samples.push(readiness(
                Path::new(&format!("/usr/bin/{server}")),
                &extra,
                &[
                    ("DISPLAY", &host_display),
                    ("XAUTHORITY", &xauthority),
                    ("XEPHYR_NO_SHM", Path::new("1")),
                ],
            )?);
            let args = vec![
                "--config".to_string(),
                guest_config.display().to_string(),
                "-auth".into(),
                dm_auth.display().to_string(),
                "-noreset".into(),
            ];
            wrapped
                .samples
                .push(readiness(&bin.join("guest-xwrap"), &args, &[])?);
        }
        ready.push(bare);
        ready.push(wrapped);
    }

    // The agent's own cost: resident memory idle and with 100 open (idle) guest connections.
    println!("bench: agent memory");
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut c = Command::new("x11perf");
        c.args(["-repeat", "1", "-time", "600", "-dot"])
            .env("DISPLAY", format!(":{proxy_display}"))
            .env("XAUTHORITY", &proxy_env[0])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        held.push(c.spawn()?);
        if o.smoke && held.len() >= 10 {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(if o.smoke { 1 } else { 3 }));
    let busy_rss = rss_kib(agent_pid);
    let held_count = held.len();
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(procs);

    let report = render(
        &traffic,
        &paths.iter().map(|p| p.0).collect::<Vec<_>>(),
        tests,
        &ready,
        idle_rss,
        busy_rss,
        held_count,
        o,
    )?;
    std::fs::write(out_dir.join("report.md"), &report.0)?;
    std::fs::write(out_dir.join("report.json"), &report.1)?;
    println!("{}", report.0);
    println!(
        "bench: wrote {} and report.json",
        out_dir.join("report.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn render(
    traffic: &[Stat],
    paths: &[&str],
    tests: &[&str],
    ready: &[Stat],
    idle: f64,
    busy: f64,
    held: usize,
    o: Options,
) -> anyhow::Result<(String, String)> {
    let mut md = String::new();
    let mut json = Vec::new();
    md.push_str(&format!(
        "# xbridge benchmark ({})\n\n",
        if o.smoke {
            "smoke"
        } else if o.quick {
            "quick"
        } else {
            "full"
        }
    ));
    md.push_str(
        "Medians over alternating rounds (min–max). Ratios are to `direct` in the same run.\n\n",
    );
    md.push_str("## Round trip and bulk (x11perf, ops/s)\n\n| test | ");
    md.push_str(&paths.join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---|".repeat(paths.len()));
    md.push('\n');
    for (t, test) in tests.iter().enumerate() {
        let row = &traffic[t * paths.len()..(t + 1) * paths.len()];
        let direct = row[0].summary().0;
        md.push_str(&format!("| {test} |"));
        for stat in row {
            let (med, lo, hi) = stat.summary();
            md.push_str(&format!(
                " {med:.0} ({lo:.0}–{hi:.0}) ×{:.2} |",
                med / direct
            ));
            json.push(format!("{{\"kind\":\"traffic\",\"name\":\"{}\",\"unit\":\"{}\",\"median\":{med},\"min\":{lo},\"max\":{hi},\"ratio_to_direct\":{}}}", stat.name, stat.unit, med / direct));
        }
        md.push('\n');
    }
    md.push_str("\n## Readiness (spawn → `-displayfd` answered, ms)\n\n| server | median | min–max |\n|---|---|---|\n");
    for stat in ready {
        let (med, lo, hi) = stat.summary();
        md.push_str(&format!("| {} | {med:.1} | {lo:.1}–{hi:.1} |\n", stat.name));
        json.push(format!("{{\"kind\":\"readiness\",\"name\":\"{}\",\"unit\":\"ms\",\"median\":{med},\"min\":{lo},\"max\":{hi}}}", stat.name));
    }
    md.push_str(&format!("\n## Agent cost\n\n| state | resident memory |\n|---|---|\n| idle | {:.1} MiB |\n| {held} open guest connections | {:.1} MiB |\n", idle / 1024.0, busy / 1024.0));
    json.push(format!(
        "{{\"kind\":\"agent_rss\",\"idle_kib\":{idle},\"busy_kib\":{busy},\"connections\":{held}}}"
    ));
    // Targets from the benchmark issue, stated plainly.
    let ratio = |test: &str, path: usize| {
        tests.iter().position(|t| *t == test).map(|t| {
            traffic[t * paths.len() + path].summary().0 / traffic[t * paths.len()].summary().0
        })
    };
    let socat_vs = |test: &str| {
        tests.iter().position(|t| *t == test).map(|t| {
            traffic[t * paths.len() + 2].summary().0 / traffic[t * paths.len() + 1].summary().0
        })
    };
    let ready_gap = ready
        .chunks(2)
        .next()
        .map(|p| p[1].summary().0 - p[0].summary().0);
    let mut targets = vec![
        (
            "readiness within 15 ms of bare Xephyr (median)",
            ready_gap.map(|g| (g <= 15.0, format!("{g:+.1} ms"))),
        ),
        (
            "bulk PutImage ≥ 0.85× direct",
            ratio("-putimage500", 2).map(|r| (r >= 0.85, format!("×{r:.2}"))),
        ),
        (
            "bulk GetImage ≥ 0.85× direct",
            ratio("-getimage500", 2).map(|r| (r >= 0.85, format!("×{r:.2}"))),
        ),
        (
            "round trip ≥ 0.75× direct",
            ratio("-prop", 2).map(|r| (r >= 0.75, format!("×{r:.2}"))),
        ),
        (
            "bulk ≥ 2× socat",
            socat_vs("-putimage500").map(|r| (r >= 2.0, format!("×{r:.2} of socat"))),
        ),
        (
            "agent < 8 MiB idle",
            Some((idle < 8.0 * 1024.0, format!("{:.1} MiB", idle / 1024.0))),
        ),
        (
            "agent < 64 MiB with 100 connections",
            (held >= 100).then(|| (busy < 64.0 * 1024.0, format!("{:.1} MiB", busy / 1024.0))),
        ),
    ];
    targets.push(("ahead of OpenSSH X11 forwarding", None));
    md.push_str("\n## Targets\n\n| target | met | measured |\n|---|---|---|\n");
    for (name, result) in &targets {
        match result {
            Some((met, value)) => md.push_str(&format!(
                "| {name} | {} | {value} |\n",
                if *met { "yes" } else { "**no**" }
            )),
            None => md.push_str(&format!("| {name} | not measured | — |\n")),
        }
    }
    let json = format!("[\n  {}\n]\n", json.join(",\n  "));
    Ok((md, json))
}

/// The report exists and has every section, and the JSON is a list of objects with the fields
/// readers rely on. Used by `cargo xtask test` after `bench --smoke`.
pub fn check_report(dir: &Path) -> anyhow::Result<()> {
    let md = std::fs::read_to_string(dir.join("report.md")).context("no report.md")?;
    for section in [
        "## Round trip and bulk",
        "## Readiness",
        "## Agent cost",
        "## Targets",
    ] {
        if !md.contains(section) {
            bail!("report.md lacks `{section}`");
        }
    }
    let json = std::fs::read_to_string(dir.join("report.json")).context("no report.json")?;
    let json = json.trim();
    if !(json.starts_with('[') && json.ends_with(']')) {
        bail!("report.json is not a JSON list");
    }
    for kind in [
        "\"kind\":\"traffic\"",
        "\"kind\":\"readiness\"",
        "\"kind\":\"agent_rss\"",
    ] {
        if !json.contains(kind) {
            bail!("report.json has no {kind} entry");
        }
    }
    if json.contains("NaN") || json.contains("inf") {
        bail!("report.json holds a number JSON cannot represent");
    }
    println!("xtask: the benchmark harness ran and wrote a well-formed report");
    Ok(())
}
