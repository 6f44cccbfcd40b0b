//! The QEMU recipe in packaging/README.md, as far as this machine allows: QEMU accepts the
//! exact `guestfwd` netdev line, and `host-agent stdio` started the way QEMU starts it (the
//! command string through `/bin/sh -c`, a socket on stdin and stdout) completes a session.

use std::io::Write;
use std::process::{Command, Stdio};

use x11rb::connection::RequestConnection;
use x11rb::protocol::xproto::ConnectionExt as _;
use xbridge_e2e::*;

fn qemu_accepts(netdev: &str) -> (bool, String) {
    let mut child = Command::new(require("qemu-system-x86_64"))
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-machine",
            "none",
            "-monitor",
            "stdio",
            "-netdev",
            netdev,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn qemu_accepts_the_guestfwd_line_and_refuses_a_broken_one() {
    let cmd = format!("{} stdio", bin("host-agent").display());
    let (ok, stderr) = qemu_accepts(&format!(
        "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:6010-cmd:{cmd}"
    ));
    assert!(ok, "{stderr}");
    // The same check notices a mistake, so passing above means something.
    let (ok, stderr) = qemu_accepts(&format!(
        "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:6010-cmdx:{cmd}"
    ));
    assert!(
        !ok && stderr.contains("not a valid char driver"),
        "{stderr}"
    );
}

#[test]
fn stdio_started_as_qemu_starts_it_completes_a_session() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (key, key_path) = key_file(dir.path());
    let cmd = format!(
        "{} stdio --key {} --display {} --xauthority {}",
        bin("host-agent").display(),
        key_path.display(),
        xvfb.display(),
        xvfb.xauthority.display()
    );
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = Guard(
        Command::new("/bin/sh")
            .args(["-c", &cmd])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                theirs.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let conn = x11_over(handshake_over(ours, &key).unwrap());
    conn.intern_atom(false, b"XBRIDGE_QEMU")
        .unwrap()
        .reply()
        .unwrap();
    assert!(
        conn.extension_information("XTEST").unwrap().is_none(),
        "untrusted by default"
    );
    drop(conn);
    assert!(child.0.wait().unwrap().success());
    assert_eq!(std::fs::read(&stderr_path).unwrap(), b"");
}
