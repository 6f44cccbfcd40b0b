//! `cargo xtask demo`: a real UML guest's display manager, shown on your display through
//! xbridge (or on a private Xvfb, with a screenshot, when there is no display).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::xdisplay::{cookie_hex, free_display, start_xvfb, xauth_file};
use crate::{deps, project_root};

const TITLE: &str = "xbridge-uml-guest";
const USAGE: &str = "usage: cargo xtask demo [--dm xdm|xinit] [--mode tcp|exec] [--server Xephyr|Xnest] [--headless] [--seconds N]";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Options {
    dm: String,
    mode: String,
    server: String,
    headless: bool,
    seconds: Option<u64>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        dm: "xdm".into(),
        mode: "tcp".into(),
        server: "auto".into(),
        headless: false,
        seconds: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--dm" => o.dm = value()?,
            "--mode" => o.mode = value()?,
            "--server" => o.server = value()?,
            "--headless" => o.headless = true,
            "--seconds" => o.seconds = Some(value()?.parse().context("--seconds takes a number")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if !matches!(o.dm.as_str(), "xdm" | "xinit") || !matches!(o.mode.as_str(), "tcp" | "exec") {
        bail!("{USAGE}");
    }
    Ok(o)
}

/// Every process we start, killed (with its whole process group) when the demo ends.
#[derive(Default)]
struct Processes(Vec<(Child, bool)>);

impl Processes {
    fn add(&mut self, child: Child, own_group: bool) {
        self.0.push((child, own_group));
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (child, own_group) in self.0.iter_mut().rev() {
            let pid = child.id() as i32;
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(if *own_group { -pid } else { pid }, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

fn step(text: &str, start: Instant) {
    println!("[{:5.1} s] {text}", start.elapsed().as_secs_f64());
}

fn wait_until<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if STOP.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {what}");
        }
        if start.elapsed() > limit {
            bail!("gave up after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn x_env(cmd: &mut Command, display: &str, xauthority: Option<&Path>) {
    cmd.env("DISPLAY", display);
    if let Some(x) = xauthority {
        cmd.env("XAUTHORITY", x);
    }
}

/// The guest's window on the host display, once it shows more than a flat colour.
fn greeter_window(display: &str, xauthority: Option<&Path>) -> anyhow::Result<Option<String>> {
    let mut search = Command::new("xdotool");
    search
        .args(["search", "--name", TITLE])
        .stderr(Stdio::null());
    x_env(&mut search, display, xauthority);
    let out = search.output().context("cannot run xdotool")?;
    let Some(id) = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    let mut colours = Command::new("sh");
    colours
        .args([
            "-c",
            "import -window \"$0\" png:- | convert png:- -format %k info:",
            &id,
        ])
        .stderr(Stdio::null());
    x_env(&mut colours, display, xauthority);
    let out = colours
        .output()
        .context("cannot run ImageMagick's import")?;
    let count: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((count > 8).then_some(id))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let o = parse(args)?;
    let code = deps::run()?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let start = Instant::now();
    let root = project_root();
    let work = root.join("target/xbridge-demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut procs = Processes::default();

    step("building host-agent and guest-xwrap", start);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--bins"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let bin = root.join("target/debug");

    // The host display: yours, or a private Xvfb with its own cookie.
    let own = std::env::var("DISPLAY")
        .ok()
        .filter(|d| !d.is_empty() && !o.headless);
    let (display, xauthority): (String, Option<PathBuf>) = match own {
        Some(d) => {
            step(&format!("using your display {d}"), start);
            (d, std::env::var_os("XAUTHORITY").map(PathBuf::from))
        }
        None => {
            let n = free_display(90);
            let auth = work.join("host.xauth");
            xauth_file(&auth, &cookie_hex()?, &[n])?;
            procs.add(start_xvfb(n, &auth)?, false);
            step(
                &format!("no display given: started a headless Xvfb on :{n}"),
                start,
            );
            (format!(":{n}"), Some(auth))
        }
    };

    // The pairing key: the user's own, created if missing; the guest sees only a copy.
    let key = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("no HOME")?
        .join("xbridge/guest.key");
    if !key.exists() {
        let status = Command::new(bin.join("host-agent"))
            .arg("init")
            .arg("--key")
            .arg(&key)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("host-agent init failed");
        }
        step(&format!("created the pairing key {}", key.display()), start);
    }
    let share = work.join("key");
    std::fs::create_dir_all(&share)?;
    std::fs::copy(&key, share.join("guest.key"))?;

    let agent_log = work.join("agent.log");
    let port = match o.mode.as_str() {
        "tcp" => {
            let port = free_port()?;
            let mut agent = Command::new(bin.join("host-agent"));
            agent
                .args([
                    "serve",
                    "--listen",
                    &format!("tcp:127.0.0.1:{port}"),
                    "--key",
                ])
                .arg(&key)
                .args(["--display", &display, "--log-file"])
                .arg(&agent_log);
            if let Some(x) = &xauthority {
                agent.arg("--xauthority").arg(x);
            }
            procs.add(
                agent.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?,
                false,
            );
            wait_until(Duration::from_secs(10), "host-agent", || {
                Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(drop))
            })?;
            step(
                &format!(
                    "host-agent serving on 127.0.0.1:{port} (the guest dials 10.0.2.2:{port})"
                ),
                start,
            );
            port
        }
        _ => {
            let script = work.join("agent-stdio");
            let xauth = xauthority
                .as_ref()
                .map(|x| format!(" --xauthority {}", x.display()))
                .unwrap_or_default();
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\nexec {} stdio --key {} --display {display}{xauth} --log-file {}\n",
                    bin.join("host-agent").display(),
                    key.display(),
                    agent_log.display()
                ),
            )?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
            step("exec mode: slirp will run host-agent stdio per guest connection; nothing listens on the host", start);
            6010
        }
    };

    step(
        &format!(
            "booting the UML guest ({} over slirp {} mode)",
            o.dm, o.mode
        ),
        start,
    );
    let booted = Instant::now();
    let mut guest = Command::new("sh");
    guest
        .arg(root.join("packaging/uml/run-guest.sh"))
        .args([
            "--mode",
            &o.mode,
            "--dm",
            &o.dm,
            "--port",
            &port.to_string(),
            "--key",
        ])
        .arg(share.join("guest.key"))
        .arg("--xwrap")
        .arg(bin.join("guest-xwrap"))
        .arg("--work")
        .arg(work.join("uml"))
        .arg("--env")
        .arg(format!("XBRIDGE_SERVER={}", o.server))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if o.mode == "exec" {
        guest.arg("--agent-cmd").arg(work.join("agent-stdio"));
    }
    use std::os::unix::process::CommandExt;
    guest.process_group(0);
    let mut child = guest
        .spawn()
        .context("cannot start packaging/uml/run-guest.sh")?;
    let console = child.stdout.take().expect("piped");
    procs.add(child, true);
    // Relay the guest's own progress lines, and keep its console in a file.
    let console_log = work.join("console.log");
    let start_copy = start;
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(console_log).ok();
        for line in BufReader::new(console).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if let Some(text) = line.strip_prefix("xbridge-guest: ") {
                step(&format!("guest: {text}"), start_copy);
            }
        }
    });

    let window = wait_until(
        Duration::from_secs(120),
        "the greeter on the host display",
        || greeter_window(&display, xauthority.as_deref()),
    )?;
    step(
        &format!(
            "greeter visible, {:.1} s after the guest started booting (window {window})",
            booted.elapsed().as_secs_f64()
        ),
        start,
    );
    if xauthority.as_deref().is_some_and(|x| x.starts_with(&work)) {
        // Headless: leave a picture once the greeter has finished drawing. Under UML it draws
        // in steps with pauses of several seconds, so "finished" is: unchanged for 12 s.
        let shot = root.join("target/xbridge-demo.png");
        let grab = || -> anyhow::Result<Vec<u8>> {
            let mut import = Command::new("import");
            import
                .args(["-window", &window, "png:-"])
                .stderr(Stdio::null());
            x_env(&mut import, &display, xauthority.as_deref());
            Ok(import.output()?.stdout)
        };
        let mut last = (grab()?, Instant::now());
        let settled = wait_until(
            Duration::from_secs(120),
            "the greeter to finish drawing",
            || {
                std::thread::sleep(Duration::from_secs(1));
                let now = grab()?;
                if now != last.0 {
                    last = (now, Instant::now());
                }
                Ok((last.1.elapsed() >= Duration::from_secs(12)).then_some(()))
            },
        );
        if settled.is_ok() {
            step(
                &format!(
                    "greeter finished drawing about {:.0} s after boot",
                    (last.1 - booted).as_secs_f64()
                ),
                start,
            );
        }
        let mut import = Command::new("import");
        import.args(["-window", "root"]).arg(&shot);
        x_env(&mut import, &display, xauthority.as_deref());
        if import.status()?.success() {
            step(&format!("screenshot: {}", shot.display()), start);
        }
    }
    match o.seconds {
        Some(n) => step(
            &format!("leaving it up for {n} s (Ctrl-C ends sooner)"),
            start,
        ),
        None => step("press Ctrl-C to stop", start),
    }
    let until = o.seconds.map(|n| Instant::now() + Duration::from_secs(n));
    while !STOP.load(Ordering::SeqCst) && until.is_none_or(|t| Instant::now() < t) {
        std::thread::sleep(Duration::from_millis(200));
    }
    step("stopping the guest, the agent and the display", start);
    drop(procs);
    Ok(ExitCode::SUCCESS)
}
