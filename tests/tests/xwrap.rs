//! guest-xwrap as display managers run it: real xinit, real Xephyr and Xnest, a real agent
//! and an Xvfb as the host display.

use std::process::{Command, Stdio};
use std::time::Duration;

use xbridge_e2e::*;

fn xinit_runs_a_client(server: &str) {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, &format!("server = \"{server}\""));
    let n = free_display();
    let out = Command::new(require("xinit"))
        .args([
            require("xdpyinfo").to_str().unwrap(),
            "-display",
            &format!(":{n}"),
            "--",
        ])
        .arg(bin("guest-xwrap"))
        .arg(format!(":{n}"))
        .env("XBRIDGE_XWRAP_CONFIG", &guest.path)
        .env_remove("DISPLAY")
        .env_remove("XAUTHORITY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("name of display:    :{n}")),
        "xdpyinfo through {server} failed:\n{stdout}\n{}\nwrapper log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        guest.log_text()
    );
    assert!(stdout.contains("640x480 pixels"), "{stdout}");
    assert!(guest
        .log_text()
        .contains("nested server accepts connections"));
}

#[test]
fn xinit_runs_the_wrapper_with_xephyr() {
    xinit_runs_a_client("Xephyr");
}

#[test]
fn xinit_runs_the_wrapper_with_xnest() {
    xinit_runs_a_client("Xnest");
}

#[test]
fn displayfd_with_and_without_a_display_number_and_sigterm_cleans_up() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let (auth, cookie) = guest.dm_auth();
    for display in [None, Some(free_display())] {
        let (mut wrapper, mut fd) = spawn_with_displayfd(&guest, display, &auth);
        let n = read_number(&mut fd, "guest-xwrap");
        if let Some(asked) = display {
            assert_eq!(n, asked);
        }
        let conn = connect_with(n, Some(&cookie));
        assert_eq!(
            x11rb::connection::Connection::setup(&conn).roots[0].width_in_pixels,
            640
        );
        assert!(
            try_connect_with(n, Some(&[0u8; 16])).is_err(),
            "the nested display must demand the DM's cookie"
        );
        drop(conn);
        let pid = wrapper.pid();
        let nested = children_of(pid);
        assert_eq!(nested.len(), 1, "one nested server under the wrapper");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = wrapper.0.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM ends the wrapper with exit 0"
        );
        assert!(!alive(nested[0]), "nested server left behind");
    }
}

#[test]
fn a_killed_nested_server_makes_the_wrapper_fail() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let (auth, _) = guest.dm_auth();
    let (mut wrapper, mut fd) = spawn_with_displayfd(&guest, None, &auth);
    read_number(&mut fd, "guest-xwrap");
    let nested = children_of(wrapper.pid());
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(nested[0] as i32, libc::SIGKILL) };
    let status = wrapper.0.wait().unwrap();
    assert!(!status.success(), "{status}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() == Some(libc::SIGKILL) || status.code() == Some(128 + libc::SIGKILL),
        "{status}"
    );
}

#[test]
fn the_wrapper_waits_for_a_late_agent() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (_, key_path) = key_file(dir.path());
    let socket = dir.path().join("late.sock");
    let guest = GuestConfig::new(&format!("unix:{}", socket.display()), &key_path, "");
    let (auth, cookie) = guest.dm_auth();
    let (_wrapper, mut fd) = spawn_with_displayfd(&guest, None, &auth);
    wait_for(Duration::from_secs(10), "a logged failed attempt", || {
        guest.log_text().contains("retrying in").then_some(())
    });
    let _agent = Agent::spawn_on(
        &xvfb,
        &key_path,
        &format!("unix:{}", socket.display()),
        dir.path(),
    );
    let n = read_number(&mut fd, "guest-xwrap");
    connect_with(n, Some(&cookie));
}

#[test]
fn a_wrong_key_fails_with_the_key_file_and_the_refusal_named() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let dir = tempdir();
    let (_, wrong_key) = key_file(dir.path());
    let guest = GuestConfig::new(&agent.endpoint(), &wrong_key, "");
    let (auth, _) = guest.dm_auth();
    let (mut wrapper, mut fd) = spawn_with_displayfd(&guest, None, &auth);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut fd, &mut rest).unwrap();
    assert_eq!(rest, "", "nothing written to -displayfd on failure");
    assert!(!wrapper.0.wait().unwrap().success());
    let log = guest.log_text();
    assert!(
        log.contains("refused by the host agent")
            && log.contains(&format!("with key file {}", wrong_key.display())),
        "{log}"
    );
}

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin("guest-xwrap"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_names_each_broken_link() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let good = GuestConfig::for_agent(&agent, "");
    let (ok, report) = check(&good.path);
    assert!(ok, "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok")).count(),
        6,
        "{report}"
    );

    let down = GuestConfig::new("unix:/nonexistent/agent.sock", &agent.key_path, "");
    let (ok, report) = check(&down.path);
    assert!(
        !ok && report.contains("FAIL agent reachable") && report.contains("start host-agent"),
        "{report}"
    );

    let dir = tempdir();
    let (_, wrong) = key_file(dir.path());
    let (ok, report) = check(&GuestConfig::new(&agent.endpoint(), &wrong, "").path);
    assert!(
        !ok && report.contains("FAIL handshake") && report.contains("pairing key"),
        "{report}"
    );

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, report) = check(&GuestConfig::new(&agent.endpoint(), &wrong, "").path);
    assert!(
        !ok && report.contains("FAIL key file") && report.contains("chmod 600"),
        "{report}"
    );

    let (ok, report) =
        check(&GuestConfig::for_agent(&agent, "server = \"/nonexistent/Xephyr\"").path);
    assert!(
        !ok && report.contains("FAIL nested server") && report.contains("apt-get install"),
        "{report}"
    );

    std::fs::write(dir.path().join("bad.toml"), "agnet = 1").unwrap();
    let (ok, report) = check(&dir.path().join("bad.toml"));
    assert!(
        !ok && report.contains("FAIL config") && report.contains("agnet"),
        "{report}"
    );
}

#[test]
fn proxy_mode_serves_one_display_behind_its_cookie() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let n = free_display();
    let mut proxy = Guard(
        Command::new(bin("guest-xwrap"))
            .args(["proxy", "--display", &format!(":{n}"), "--config"])
            .arg(&guest.path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(proxy.0.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), format!("DISPLAY=:{n}"));
    let xauthority = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("XAUTHORITY=")
        .unwrap()
        .to_owned();
    let cookie = xbridge_proto::xauthority::server_cookie(std::path::Path::new(&xauthority), n)
        .unwrap()
        .unwrap();
    let conn = connect_with(n, Some(&cookie));
    assert_eq!(
        x11rb::connection::Connection::setup(&conn).roots[0].width_in_pixels,
        1024
    );
    let refused = try_connect_with(n, Some(&[7u8; 16])).unwrap_err();
    assert!(
        refused.contains("wrong or missing MIT-MAGIC-COOKIE-1"),
        "{refused}"
    );
}
