//! The user's story end to end: a User Mode Linux guest boots (slirp networking, a confined
//! hostfs root), its xdm runs guest-xwrap, and the greeter shows up on the host display
//! through host-agent — over slirp's host forwarding (`tcp`) and over slirp `add exec` with
//! `host-agent stdio` (`exec`). The tcp guest runs Xephyr, the exec guest Xnest.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;
use xbridge_e2e::*;

const TITLE: &str = "xbridge-uml-guest";

/// A UML guest and every host process it spawned (one process group).
struct Guest {
    child: Child,
    console: PathBuf,
    started: Instant,
    _work: tempfile::TempDir,
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group is ours.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Guest {
    /// Boots a guest; `server` is guest-xwrap's `server` setting (Xephyr, Xnest).
    fn boot(
        mode: &str,
        port: u16,
        key: &Path,
        agent_cmd: Option<&Path>,
        probe: &Path,
        server: &str,
    ) -> Guest {
        require("linux.uml");
        require("slirp-fullbolt");
        let work = tempdir();
        let console = work.path().join("console.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/uml/run-guest.sh");
        let mut command = Command::new("/bin/sh");
        command
            .arg(script)
            .args(["--mode", mode, "--port", &port.to_string(), "--key"])
            .arg(key)
            .arg("--xwrap")
            .arg(bin("guest-xwrap"))
            .arg("--work")
            .arg(work.path())
            .arg("--env")
            .arg(format!("XBRIDGE_PROBE={}", probe.display()))
            .arg("--env")
            .arg(format!("XBRIDGE_SERVER={server}"))
            .stdout(std::fs::File::create(&console).unwrap())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(cmd) = agent_cmd {
            command.arg("--agent-cmd").arg(cmd);
        }
        let child = command.spawn().expect("run-guest.sh");
        Guest {
            child,
            console,
            started: Instant::now(),
            _work: work,
        }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }
}

fn find_window(host: &RustConnection, title: &str) -> Option<Window> {
    let root = host.setup().roots[0].root;
    host.query_tree(root)
        .ok()?
        .reply()
        .ok()?
        .children
        .into_iter()
        .find(|&w| {
            host.get_property(false, w, AtomEnum::WM_NAME, AtomEnum::STRING, 0, 64)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|p| p.value == title.as_bytes())
        })
}

fn image(host: &RustConnection, window: Window) -> Option<Vec<u8>> {
    let geometry = host.get_geometry(window).ok()?.reply().ok()?;
    let reply = host
        .get_image(
            ImageFormat::Z_PIXMAP,
            window,
            0,
            0,
            geometry.width,
            geometry.height,
            !0,
        )
        .ok()?
        .reply()
        .ok()?;
    Some(reply.data)
}

fn distinct_colours(image: &[u8]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for px in image.chunks(4).step_by(7) {
        seen.insert([px[0], px[1], px[2]]);
    }
    seen.len()
}

/// Waits for the greeter: the nested server's window on the host, drawn (many colours) and
/// settled (unchanged over two seconds). Returns the settled image and the seconds it took.
fn wait_for_greeter(host: &RustConnection, guest: &Guest) -> (Window, Vec<u8>, f64) {
    let window = wait_for(
        Duration::from_secs(90),
        "the guest's Xephyr window on the host",
        || {
            find_window(host, TITLE).or_else(|| {
                assert!(
                    !guest.console().contains("powering off"),
                    "the guest gave up:\n{}",
                    guest.console()
                );
                None
            })
        },
    );
    let settled = settle(host, window);
    (window, settled, guest.started.elapsed().as_secs_f64())
}

/// The window's image once it is drawn (many colours) and unchanged over two seconds.
fn settle(host: &RustConnection, window: Window) -> Vec<u8> {
    let mut history: Vec<Vec<u8>> = Vec::new();
    wait_for(
        Duration::from_secs(120),
        "the greeter to be drawn and settle",
        || {
            let now = image(host, window)?;
            history.push(now.clone());
            let n = history.len();
            let done = distinct_colours(&now) > 8
                && n >= 3
                && history[n - 3] == now
                && history[n - 2] == now;
            if !done {
                std::thread::sleep(Duration::from_millis(1000));
            }
            done.then_some(now)
        },
    )
}

/// Types a login name into the greeter with xdotool (XTEST on the host display), sees the
/// window change, erases it again and sees the window return to exactly what it was: the
/// keys reached the greeter's login field, not some unrelated redraw. A greeter still being
/// drawn (it pauses for seconds between steps under UML) cannot return to an older image,
/// so an attempt made too early fails and is retried from a new baseline.
fn type_into(xvfb: &Xvfb, host: &RustConnection, window: Window) {
    let xdotool = |args: &[&str]| {
        let status = Command::new(require("xdotool"))
            .args(args)
            .env("DISPLAY", xvfb.display())
            .env("XAUTHORITY", &xvfb.xauthority)
            .status()
            .unwrap();
        assert!(status.success(), "xdotool {args:?}");
    };
    let id = window.to_string();
    let deadline = Instant::now() + Duration::from_secs(150);
    let poll = |until: Duration, want: &dyn Fn(&[u8]) -> bool| {
        let end = Instant::now() + until;
        while Instant::now() < end {
            if image(host, window).is_some_and(|now| want(&now)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    for attempt in 1.. {
        assert!(
            Instant::now() < deadline,
            "typing never showed up in the greeter's login field ({} attempts)",
            attempt - 1
        );
        xdotool(&["windowraise", &id]);
        xdotool(&["windowfocus", "--sync", &id]);
        let before = settle(host, window);
        xdotool(&["type", "--delay", "60", "guest"]);
        if !poll(Duration::from_secs(10), &|now| now != before.as_slice()) {
            continue;
        }
        xdotool(&[
            "key",
            "--delay",
            "60",
            "BackSpace",
            "BackSpace",
            "BackSpace",
            "BackSpace",
            "BackSpace",
        ]);
        if poll(Duration::from_secs(10), &|now| now == before.as_slice()) {
            eprintln!("typing reached the greeter on attempt {attempt}");
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A private directory holding only a copy of the pairing key: the guest's `/xbridge/key`.
fn key_share(agent: &Agent) -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let key = dir.path().join("guest.key");
    std::fs::copy(&agent.key_path, &key).unwrap();
    (dir, key)
}

/// Forwards TCP (what the guest reaches as 10.0.2.2:port) to the agent's unix socket and
/// records every byte the agent sends toward the guest.
fn relay(socket: PathBuf) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let toward_guest = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&toward_guest);
    std::thread::spawn(move || {
        for guest in listener.incoming() {
            let Ok(mut guest) = guest else { return };
            let Ok(mut agent) = std::os::unix::net::UnixStream::connect(&socket) else {
                continue;
            };
            let (mut g2, mut a2) = (guest.try_clone().unwrap(), agent.try_clone().unwrap());
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut g2, &mut a2);
                let _ = a2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = agent.read(&mut buf) {
                    if n == 0 || guest.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = guest.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, toward_guest)
}

#[test]
fn tcp_mode_greeter_typing_no_cookie_and_a_second_guest() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let (port, toward_guest) = relay(agent.socket.clone());
    let (_share, key) = key_share(&agent);
    let host = xvfb.connect();

    let first = Guest::boot("tcp", port, &key, None, &xvfb.xauthority, "Xephyr");
    let (window, _, seconds) = wait_for_greeter(&host, &first);
    eprintln!("tcp mode: greeter visible {seconds:.1} s after UML start");
    type_into(&xvfb, &host, window);
    let console = first.console();
    assert!(
        console.contains(&format!("probe {} absent", xvfb.xauthority.display())),
        "{console}"
    );
    let sent = toward_guest.lock().unwrap().clone();
    assert!(
        sent.len() > 10_000,
        "the greeter's traffic went through the relay ({} bytes)",
        sent.len()
    );
    assert!(
        !contains(&sent, &xvfb.cookie),
        "the host cookie crossed into the guest"
    );

    drop(first);
    wait_for(
        Duration::from_secs(10),
        "the first guest's window to go",
        || find_window(&host, TITLE).is_none().then_some(()),
    );
    // The agent keeps serving: a plain client, then a whole second guest.
    bridged(&agent.socket, &agent.key);
    let second = Guest::boot("tcp", port, &key, None, &xvfb.xauthority, "Xephyr");
    let (_, _, seconds) = wait_for_greeter(&host, &second);
    eprintln!("tcp mode, second guest: greeter visible {seconds:.1} s after UML start");
}

#[test]
fn exec_mode_greeter_and_typing_with_no_listening_port() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (_, agent_key) = key_file(dir.path());
    let (_share, key) = {
        let share = tempdir();
        let key = share.path().join("guest.key");
        std::fs::copy(&agent_key, &key).unwrap();
        (share, key)
    };
    // What slirp runs for each guest connection to 10.0.2.1:6010.
    let script = dir.path().join("agent-stdio");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} stdio -v --key {} --display {} --xauthority {} --log-file {}\n",
            bin("host-agent").display(),
            agent_key.display(),
            xvfb.display(),
            xvfb.xauthority.display(),
            dir.path().join("agent.log").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = xvfb.connect();
    let guest = Guest::boot("exec", 6010, &key, Some(&script), &xvfb.xauthority, "Xnest");
    let (window, _, seconds) = wait_for_greeter(&host, &guest);
    eprintln!("exec mode: greeter visible {seconds:.1} s after UML start");
    type_into(&xvfb, &host, window);
    assert!(guest.console().contains("absent"), "{}", guest.console());
    // Every X connection of the guest was a slirp `add exec` of `host-agent stdio`.
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        log.matches("guest authenticated").count() >= 2,
        "the preflight and the nested server each came through `add exec`:\n{log}"
    );
}
