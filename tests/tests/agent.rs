//! host-agent against a real Xvfb started with `-auth`.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat, PropMode};
use x11rb::wrapper::ConnectionExt as _;
use xbridge_e2e::*;

fn put_get(conn: &impl Connection, drawable_parent: u32) -> Vec<u8> {
    let pixmap = conn.generate_id().unwrap();
    conn.create_pixmap(24, pixmap, drawable_parent, 64, 64)
        .unwrap();
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, pixmap, &Default::default()).unwrap();
    let data: Vec<u8> = (0..64 * 64 * 4).map(|i| (i * 7 % 251) as u8).collect();
    conn.put_image(
        ImageFormat::Z_PIXMAP,
        pixmap,
        gc,
        64,
        64,
        0,
        0,
        0,
        24,
        &data,
    )
    .unwrap();
    let got = conn
        .get_image(ImageFormat::Z_PIXMAP, pixmap, 0, 0, 64, 64, !0)
        .unwrap()
        .reply()
        .unwrap()
        .data;
    // Compare the 24 bits of colour; the pad byte is unspecified.
    assert_eq!(got.len(), data.len());
    got.chunks(4)
        .zip(data.chunks(4))
        .for_each(|(g, d)| assert_eq!(g[..3], d[..3]));
    got
}

#[test]
fn a_bridged_client_gets_the_same_answers_as_a_direct_one() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let direct = xvfb.connect();
    let bridged = bridged(&agent.socket, &agent.key);
    let (d, b) = (&direct.setup().roots[0], &bridged.setup().roots[0]);
    assert_eq!(
        (d.root, d.width_in_pixels, d.height_in_pixels, d.root_depth),
        (b.root, b.width_in_pixels, b.height_in_pixels, b.root_depth)
    );
    for name in [&b"WM_NAME"[..], b"_XBRIDGE_TEST_ATOM", b"UTF8_STRING"] {
        let a = direct
            .intern_atom(false, name)
            .unwrap()
            .reply()
            .unwrap()
            .atom;
        let c = bridged
            .intern_atom(false, name)
            .unwrap()
            .reply()
            .unwrap()
            .atom;
        assert_eq!(a, c, "{}", String::from_utf8_lossy(name));
    }
    assert_eq!(put_get(&direct, d.root), put_get(&bridged, b.root));
}

/// Relays a fake display to the real one, recording what flows each way.
struct Recorder {
    number: u16,
    toward_server: Arc<Mutex<Vec<u8>>>,
}

fn recorder(target: u16) -> Recorder {
    let (number, listener) = (700..900)
        .find_map(|n| {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(
                format!("/tmp/.X11-unix/X{n}").as_bytes(),
            )
            .ok()?;
            std::os::unix::net::UnixListener::bind_addr(&addr)
                .ok()
                .map(|l| (n, l))
        })
        .expect("a free display number for the recorder");
    let toward_server = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&toward_server);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(
                format!("/tmp/.X11-unix/X{target}").as_bytes(),
            )
            .unwrap();
            let mut server = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = c2.read(&mut buf) {
                    if n == 0 || s2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Recorder {
        number,
        toward_server,
    }
}

fn extension_names(conn: &impl Connection) -> Vec<String> {
    let reply = conn.list_extensions().unwrap().reply().unwrap();
    reply
        .names
        .iter()
        .map(|n| String::from_utf8_lossy(&n.name).into_owned())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_host_cookie_never_travels_toward_the_guest() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &["--trust", "trusted"]);
    let mut stream = guest_stream(&agent.socket, &agent.key).unwrap();
    // A hand-made setup request with no credential; everything the agent answers is recorded.
    stream
        .write_all(&[b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let mut reply = vec![0u8; 8];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(
        reply[0], 1,
        "the host display should accept the swapped-in cookie"
    );
    let extra = u16::from_le_bytes([reply[6], reply[7]]) as usize * 4;
    let mut rest = vec![0u8; extra];
    stream.read_exact(&mut rest).unwrap();
    reply.extend(rest);
    assert!(!contains(&reply, &xvfb.cookie));
    assert!(!contains(&reply, hex::encode(&xvfb.cookie).as_bytes()));
}

#[test]
fn a_guest_that_fails_the_handshake_gets_no_x11_byte() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let wrong = xbridge_proto::Key::generate();
    let err = guest_stream(&agent.socket, &wrong).unwrap_err();
    assert!(
        err.contains("does not match this agent's pairing key"),
        "{err}"
    );
    // Skipping the handshake: straight to X11.
    let mut raw = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
    raw.write_all(&[b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'\n'])
        .unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8(answer).expect("only handshake text comes back");
    assert!(text.starts_with("{\"type\":\"refuse\""), "{text}");
    assert!(text.contains("\"code\":\"malformed\""), "{text}");
}

#[test]
fn untrusted_guests_cannot_capture_inject_or_tamper() {
    let xvfb = Xvfb::start();
    let recorder = recorder(xvfb.number);
    let agent = Agent::start_for(&format!(":{}", recorder.number), &xvfb.xauthority, &[]);
    let trusted = xvfb.connect();
    let root = trusted.setup().roots[0].root;
    let window = trusted.generate_id().unwrap();
    trusted
        .create_window(
            24,
            window,
            root,
            0,
            0,
            100,
            100,
            0,
            xproto::WindowClass::INPUT_OUTPUT,
            0,
            &Default::default(),
        )
        .unwrap();
    trusted.map_window(window).unwrap();
    trusted.sync().unwrap();

    let guest = bridged(&agent.socket, &agent.key);
    let extensions = extension_names(&guest);
    assert!(
        !extensions.iter().any(|e| e == "XTEST" || e == "RECORD"),
        "{extensions:?}"
    );
    let direct_ext = extension_names(&trusted);
    assert!(
        direct_ext.iter().any(|e| e == "XTEST"),
        "Xvfb itself offers XTEST: {direct_ext:?}"
    );
    assert!(
        guest
            .get_image(ImageFormat::Z_PIXMAP, root, 0, 0, 10, 10, !0)
            .unwrap()
            .reply()
            .is_err(),
        "root window captured"
    );
    assert!(
        guest
            .get_image(ImageFormat::Z_PIXMAP, window, 0, 0, 10, 10, !0)
            .unwrap()
            .reply()
            .is_err(),
        "trusted window captured"
    );
    let change = guest
        .change_property8(
            PropMode::REPLACE,
            window,
            xproto::AtomEnum::WM_NAME,
            xproto::AtomEnum::STRING,
            b"pwned",
        )
        .unwrap()
        .check();
    match change {
        Err(x11rb::errors::ReplyError::X11Error(e)) => {
            assert_eq!(e.error_kind, x11rb::protocol::ErrorKind::Access)
        }
        other => panic!("ChangeProperty on a trusted window should be BadAccess, got {other:?}"),
    }

    // The minted cookie is the last MIT cookie the agent sent toward the server.
    let sent = recorder.toward_server.lock().unwrap().clone();
    let mut minted = None;
    for start in 0..sent.len().saturating_sub(12) {
        if let Ok(Some((req, _))) = xbridge_proto::setup::SetupRequest::parse(&sent[start..]) {
            if req.auth_name == b"MIT-MAGIC-COOKIE-1"
                && req.auth_data != xvfb.cookie
                && req.major == 11
            {
                minted = Some(req.auth_data);
            }
        }
    }
    let minted = minted.expect("the agent presented a minted cookie");
    assert!(
        try_connect_with(xvfb.number, Some(&minted)).is_ok(),
        "the minted cookie works while the guest is connected"
    );
    drop(guest);
    wait_for(
        Duration::from_secs(5),
        "the minted authorization to be revoked",
        || {
            try_connect_with(xvfb.number, Some(&minted))
                .is_err()
                .then_some(())
        },
    );
}

#[test]
fn bad_guests_are_refused_and_others_keep_working() {
    let xvfb = Xvfb::start();
    let (_config_dir, config) = agent_config("handshake_timeout_s = 1\n");
    let agent = Agent::start(&xvfb, &["--config", &config]);
    let refusal = |input: &[u8]| {
        let mut s = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
        let _ = s.write_all(input);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(refusal(b"garbage\n").contains("\"code\":\"malformed\""));
    assert!(refusal(&vec![b'x'; 100_000]).contains("\"code\":\"too_long\""));
    assert!(
        refusal(b"{\"type\":\"hel").contains("\"code\":\"timeout\""),
        "stalled handshake cut at the deadline"
    );
    let wrong = guest_stream(&agent.socket, &xbridge_proto::Key::generate()).unwrap_err();
    assert!(wrong.contains("pairing key"), "{wrong}");
    // And a good guest is still served.
    let good = bridged(&agent.socket, &agent.key);
    assert_eq!(good.setup().roots[0].width_in_pixels, 1024);
    let log = agent.log();
    assert!(log.contains("handshake failed"), "{log}");
}

#[test]
fn configuration_mistakes_exit_2_with_the_fix() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (_, key) = key_file(dir.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(bin("host-agent"))
        .args([
            "serve",
            "--display",
            &xvfb.display(),
            "--listen",
            "tcp:127.0.0.1:0",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(bin("host-agent"))
        .args([
            "serve",
            "--display",
            &xvfb.display(),
            "--listen",
            "tcp:0.0.0.0:6010",
            "--key",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allow-remote") && stderr.contains("tcp:0.0.0.0:6010"),
        "{stderr}"
    );
}

#[test]
fn stdio_mode_serves_one_guest_and_never_writes_stderr() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (key, key_path) = key_file(dir.path());
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let theirs_out = theirs.try_clone().unwrap();
    let mut child = Guard(
        Command::new(bin("host-agent"))
            .args(["stdio", "-vv", "--display", &xvfb.display(), "--xauthority"])
            .arg(&xvfb.xauthority)
            .arg("--key")
            .arg(&key_path)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let conn = x11_over(handshake_over(ours, &key).unwrap());
    conn.intern_atom(false, b"XBRIDGE_STDIO")
        .unwrap()
        .reply()
        .unwrap();
    drop(conn);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        std::fs::read(&stderr_path).unwrap(),
        b"",
        "stdio mode wrote to stderr"
    );
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (key, key_path) = key_file(dir.path());
    let socket = dir.path().join("activated.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --key \"$1\" --display \"$2\" --xauthority \"$3\"")
        .arg(bin("host-agent"))
        .arg(&key_path)
        .arg(xvfb.display())
        .arg(&xvfb.xauthority)
        .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let _agent = Guard(command.spawn().unwrap());
    drop(listener);
    let conn = bridged(&socket, &key);
    assert_eq!(conn.setup().roots[0].width_in_pixels, 1024);
}

#[test]
fn sigterm_stops_accepting_and_exits_0() {
    let xvfb = Xvfb::start();
    let mut agent = Agent::start(&xvfb, &[]);
    let live = bridged(&agent.socket, &agent.key);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(agent.process.pid() as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(3), "the listener to close", || {
        std::os::unix::net::UnixStream::connect(&agent.socket)
            .is_err()
            .then_some(())
    });
    // The live connection still works during the grace period.
    live.intern_atom(false, b"GRACE").unwrap().reply().unwrap();
    drop(live);
    let status = agent.process.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
