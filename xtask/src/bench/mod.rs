//! `cargo xtask bench [--quick] [--smoke]`: readiness, round trip and bulk, the agent's own
//! cost and a 200-client scale run, each measured side by side with its baselines in the same
//! run, alternating configurations round by round. Writes `target/bench/report.md` and
//! `report.json`.
//!
//! - [`baselines`]: socat, a plain two-hop pump, OpenSSH X11 forwarding.
//! - [`measure`]: x11perf, readiness timing, /proc readings, `xbridge-load`.
//! - [`report`]: the tables and the targets, met or not.

mod baselines;
mod measure;
mod report;

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::project_root;
use crate::xdisplay::{cookie_hex, free_display, start_xvfb, xauth_file};
use measure::{readiness, rss_kib, x11perf, Cost};
pub use report::check_report;
use report::{ReadyRow, Results, ScaleRow, Stat};

/// Kills what it holds, last started first.
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

impl Options {
    fn mode(self) -> &'static str {
        match (self.smoke, self.quick) {
            (true, _) => "smoke",
            (false, true) => "quick",
            (false, false) => "full",
        }
    }
}

/// One way for an X client to reach the host display.
struct Route {
    name: String,
    display: String,
    xauthority: PathBuf,
}

pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let o = Options {
        quick: args.iter().any(|a| a == "--quick"),
        smoke: args.iter().any(|a| a == "--smoke"),
    };
    let code = crate::deps::run()?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
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

    // The host display, its cookie, and the agent.
    let host = free_display(140);
    let cookie = cookie_hex()?;
    let xauthority = work.join("host.xauth");
    xauth_file(&xauthority, &cookie, &[host])?;
    procs.0.push(start_xvfb(host, &xauthority)?);
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
        .args(["serve", "--listen", &format!("tcp:127.0.0.1:{port}")])
        .arg("--key")
        .arg(&key)
        .args(["--display", &format!(":{host}"), "--xauthority"])
        .arg(&xauthority)
        // Room for the 200-client scale run (the X server's own limit is 256 clients).
        .args(["--max-connections", "240"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()?;
    let agent_pid = agent.id();
    procs.0.push(agent);
    let stdio_socket = work.join("stdio.sock");
    serve_stdio_agents(&stdio_socket, &bin, &key, host, &xauthority)?;

    // Every route to the host display.
    let mut routes = vec![Route {
        name: report::DIRECT.into(),
        display: format!(":{host}"),
        xauthority: xauthority.clone(),
    }];
    let socat_display = free_display(host + 1);
    procs.0.push(baselines::socat(socat_display, host)?);
    let plain_display = free_display(socat_display + 1);
    baselines::plain_two_hop_pump(plain_display, host)?;
    for (n, name) in [
        (socat_display, report::SOCAT),
        (plain_display, report::PLAIN),
    ] {
        let xa = work.join(format!("{n}.xauth"));
        xauth_file(&xa, &cookie, &[n])?;
        routes.push(Route {
            name: name.into(),
            display: format!(":{n}"),
            xauthority: xa,
        });
    }
    let mut proxy_pid = 0;
    let mut next = plain_display + 1;
    for (agent_at, name) in [
        (format!("tcp:127.0.0.1:{port}"), report::XBRIDGE),
        (format!("unix:{}", stdio_socket.display()), "xbridge stdio"),
    ] {
        let n = free_display(next);
        next = n + 1;
        let (proxy, xa) = start_proxy(&bin, &work, n, &agent_at, &key, name)?;
        if name == report::XBRIDGE {
            proxy_pid = proxy.id();
        }
        procs.0.push(proxy);
        routes.push(Route {
            name: name.into(),
            display: format!(":{n}"),
            xauthority: xa,
        });
    }
    let mut unmeasured = Vec::new();
    let sshd = match baselines::Sshd::start(&work.join("ssh")) {
        Ok(sshd) => {
            for (trusted, name) in [(true, report::SSH_TRUSTED), (false, report::SSH_UNTRUSTED)] {
                match sshd.forward(trusted, host, &xauthority) {
                    Ok((session, display)) => {
                        procs.0.push(session);
                        routes.push(Route {
                            name: name.into(),
                            display,
                            xauthority: sshd.xauthority(),
                        });
                    }
                    Err(e) => unmeasured.push((name.to_owned(), format!("{e:#}"))),
                }
            }
            Some(sshd)
        }
        Err(e) => {
            for name in [report::SSH_TRUSTED, report::SSH_UNTRUSTED] {
                unmeasured.push((name.to_owned(), format!("{e:#}")));
            }
            None
        }
    };
    let idle_kib = rss_kib(agent_pid);

    // Traffic: every route once per round, rounds alternating; the agent's and the proxy's
    // CPU time and bytes read are summed over the bulk rows of `xbridge tcp`.
    let (rounds, scale) = match (o.smoke, o.quick) {
        (true, _) => (1, 1),
        (false, true) => (3, 1),
        (false, false) => (5, 3),
    };
    let all_tests = [
        "-prop",
        "-putimage100",
        "-getimage100",
        "-putimage500",
        "-getimage500",
    ];
    let tests: Vec<&'static str> = if o.smoke {
        vec!["-prop", "-putimage500"]
    } else {
        all_tests.to_vec()
    };
    let mut traffic: Vec<Vec<Stat>> = tests
        .iter()
        .map(|_| routes.iter().map(|_| Stat::default()).collect())
        .collect();
    let mut agent_cost = Cost::default();
    let mut proxy_cost = Cost::default();
    for round in 0..rounds {
        println!("bench: traffic round {}/{rounds}", round + 1);
        for (t, test) in tests.iter().enumerate() {
            for (r, route) in routes.iter().enumerate() {
                let costed = route.name == report::XBRIDGE && test.ends_with("500");
                let before = (Cost::of(agent_pid)?, Cost::of(proxy_pid)?);
                let (rate, ops) = x11perf(&route.display, &route.xauthority, test, scale)
                    .with_context(|| format!("route `{}`", route.name))?;
                if costed {
                    // A 500×500 image at 32 bits per pixel each way per operation.
                    let bytes = ops * 500 * 500 * 4;
                    agent_cost.add(Cost::of(agent_pid)?.since(before.0, bytes));
                    proxy_cost.add(Cost::of(proxy_pid)?.since(before.1, bytes));
                }
                traffic[t][r].samples.push(rate);
            }
        }
    }
    drop(sshd);

    // Scale: one client, then many at once, directly and through xbridge.
    println!("bench: scale");
    let (many, rounds_one, rounds_many) = if o.smoke { (10, 20, 2) } else { (200, 400, 20) };
    let mut scale_rows = Vec::new();
    for route in routes
        .iter()
        .filter(|r| [report::DIRECT, report::XBRIDGE].contains(&r.name.as_str()))
    {
        for (clients, rounds) in [(1, rounds_one), (many, rounds_many)] {
            let result = measure::load(&bin, &route.display, &route.xauthority, clients, rounds)
                .map_err(|e| format!("{e:#}"));
            scale_rows.push(ScaleRow {
                path: route.name.clone(),
                clients,
                rounds,
                result,
            });
        }
    }

    // Readiness: bare nested servers against the host display versus guest-xwrap through the
    // agent, alternating.
    let runs = if o.smoke {
        2
    } else if o.quick {
        5
    } else {
        20
    };
    let dm_cookie = cookie_hex()?;
    let dm_auth = work.join("dm.xauth");
    xauth_file(&dm_auth, &dm_cookie, &[0])?;
    let dm_cookie = hex::decode(&dm_cookie)?;
    let host_display = PathBuf::from(format!(":{host}"));
    let guest_config = work.join("xwrap-ready.toml");
    let mut ready = Vec::new();
    println!("bench: readiness, {runs} runs each");
    for server in ["Xephyr", "Xnest"] {
        std::fs::write(
            &guest_config,
            format!(
                "agent = \"tcp:127.0.0.1:{port}\"\nkey_file = \"{}\"\nserver = \"{server}\"\n\
                 screen = \"800x600\"\nlog_file = \"{}\"\n",
                key.display(),
                work.join("xwrap.log").display()
            ),
        )?;
        let mut bare = new_ready_row(format!("{server} bare"));
        let mut wrapped = new_ready_row(format!("{server} via guest-xwrap"));
        let size = if server == "Xephyr" {
            "-screen"
        } else {
            "-geometry"
        };
        for _ in 0..runs {
            record(
                &mut bare,
                readiness(
                    Path::new(&format!("/usr/bin/{server}")),
                    &[size.into(), "800x600".into()],
                    &[
                        ("DISPLAY", &host_display),
                        ("XAUTHORITY", &xauthority),
                        ("XEPHYR_NO_SHM", Path::new("1")),
                    ],
                    None,
                )?,
            );
            let args = vec![
                "--config".to_string(),
                guest_config.display().to_string(),
                "-auth".into(),
                dm_auth.display().to_string(),
                "-noreset".into(),
            ];
            record(
                &mut wrapped,
                readiness(&bin.join("guest-xwrap"), &args, &[], Some(&dm_cookie))?,
            );
        }
        ready.push(bare);
        ready.push(wrapped);
    }

    // The agent's resident memory with 100 open (idle) guest connections.
    println!("bench: agent memory");
    let xbridge = routes
        .iter()
        .find(|r| r.name == report::XBRIDGE)
        .expect("route");
    let mut held = Killer(Vec::new());
    let want = if o.smoke { 10 } else { 100 };
    for _ in 0..want {
        held.0.push(
            Command::new("x11perf")
                .args(["-repeat", "1", "-time", "600", "-dot"])
                .env("DISPLAY", &xbridge.display)
                .env("XAUTHORITY", &xbridge.xauthority)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    // Connected means the agent holds one more socket per client.
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let base = fds(agent_pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fds(agent_pid) < base + want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy_kib = rss_kib(agent_pid);
    drop(held);
    drop(procs);

    let results = Results {
        mode: o.mode(),
        paths: routes.iter().map(|r| r.name.clone()).collect(),
        tests,
        traffic,
        unmeasured,
        ready,
        idle_kib,
        busy_kib,
        held: want,
        cost: vec![
            ("host-agent".into(), agent_cost),
            ("guest-xwrap proxy".into(), proxy_cost),
        ],
        scale: scale_rows,
    };
    let (md, json) = results.render();
    std::fs::write(out_dir.join("report.md"), &md)?;
    std::fs::write(out_dir.join("report.json"), &json)?;
    println!("{md}");
    println!(
        "bench: wrote {} and report.json",
        out_dir.join("report.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn new_ready_row(name: String) -> ReadyRow {
    ReadyRow {
        name,
        signalled: Stat::default(),
        served: Stat::default(),
        refused_after_signal: 0,
    }
}

fn record(row: &mut ReadyRow, ready: measure::Ready) {
    row.signalled.samples.push(ready.signalled);
    row.served.samples.push(ready.served);
    row.refused_after_signal += ready.refused;
}

/// `host-agent stdio` per connection on a unix socket, as slirp `add exec` and QEMU guestfwd
/// start it.
fn serve_stdio_agents(
    socket: &Path,
    bin: &Path,
    key: &Path,
    host: u16,
    xauthority: &Path,
) -> anyhow::Result<()> {
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    let (agent, key, xauthority) = (
        bin.join("host-agent"),
        key.to_owned(),
        xauthority.to_owned(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let Ok(dup) = conn.try_clone() else { continue };
            let _ = Command::new(&agent)
                .arg("stdio")
                .arg("--key")
                .arg(&key)
                .args(["--display", &format!(":{host}"), "--xauthority"])
                .arg(&xauthority)
                .stdin(Stdio::from(OwnedFd::from(conn)))
                .stdout(Stdio::from(OwnedFd::from(dup)))
                .spawn();
        }
    });
    Ok(())
}

/// `guest-xwrap proxy` on display `n` toward the agent at `agent_at`; returns it and the
/// Xauthority file it printed.
fn start_proxy(
    bin: &Path,
    work: &Path,
    n: u16,
    agent_at: &str,
    key: &Path,
    name: &str,
) -> anyhow::Result<(Child, PathBuf)> {
    let config = work.join(format!("xwrap-{}.toml", name.replace(' ', "-")));
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
    let xa = lines
        .next()
        .context("proxy printed no XAUTHORITY")??
        .trim_start_matches("XAUTHORITY=")
        .into();
    Ok((proxy, xa))
}
