//! Faults and abuse with real processes: a host display that dies, a display manager that
//! gives up early, guests that stall, lie about lengths, flood the agent or fail by the
//! thousand — and afterwards the agent holds no more descriptors or memory than before.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use x11rb::protocol::xproto::ConnectionExt as _;
use xbridge_e2e::load::image_round_trips;
use xbridge_e2e::*;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn read_all(stream: &mut UnixStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

#[test]
fn the_host_display_dying_ends_the_wrapper_but_not_the_agent() {
    let mut xvfb = Xvfb::start();
    let mut agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let (auth, _) = guest.dm_auth();
    let (mut wrapper, mut fd) = spawn_with_displayfd(&guest, None, &auth);
    read_number(&mut fd, "guest-xwrap");
    xvfb.kill();
    let status = wait_for(Duration::from_secs(20), "the wrapper to exit", || {
        wrapper.0.try_wait().unwrap()
    });
    assert!(
        !status.success(),
        "the display manager must see a failure to restart: {status}"
    );
    // The agent is still there and says what is wrong.
    assert!(
        agent.process.0.try_wait().unwrap().is_none(),
        "host-agent died with the display"
    );
    // With the display gone the agent refuses new guests, saying why.
    let refusal =
        guest_stream(&agent.socket, &agent.key).expect_err("welcomed without a host display");
    assert!(
        refusal.contains("cannot connect to host display"),
        "{refusal}"
    );
}

#[test]
fn sigterm_during_the_readiness_wait_leaves_nothing_behind() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let (auth, _) = guest.dm_auth();
    let n = free_display();
    let (mut wrapper, _fd) = {
        let (read, write) = UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let fd = write.as_raw_fd();
        let mut command = Command::new(bin("guest-xwrap"));
        command
            .arg("--config")
            .arg(&guest.path)
            .arg(format!(":{n}"))
            .args(["-displayfd", &fd.to_string(), "-auth"])
            .arg(&auth);
        clear_cloexec_in_child(&mut command, fd);
        let child = Guard(command.spawn().unwrap());
        drop(write);
        (child, read)
    };
    // As soon as the nested server exists, while the wrapper is still waiting for it.
    let nested = wait_for(
        Duration::from_secs(20),
        "the nested server to be spawned",
        || children_of(wrapper.pid()).first().copied(),
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(wrapper.pid() as i32, libc::SIGTERM) };
    let status = wait_for(Duration::from_secs(20), "the wrapper to exit", || {
        wrapper.0.try_wait().unwrap()
    });
    // Stopped, not failed: the nested server's own end (exit 0, or SIGTERM before it had
    // installed its handlers) is mirrored.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.code() == Some(0) || status.signal() == Some(libc::SIGTERM),
        "{status}"
    );
    wait_for(
        Duration::from_secs(10),
        "the nested server to be gone",
        || (!alive(nested)).then_some(()),
    );
    assert!(
        !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists(),
        "lock file of :{n} left behind"
    );
}

#[test]
fn a_guest_stalling_inside_its_setup_request_is_cut_off_at_the_deadline() {
    let xvfb = Xvfb::start();
    let (_config_dir, config) = agent_config("handshake_timeout_s = 1\n");
    let agent = Agent::start(&xvfb, &["--config", &config]);
    let mut stream = guest_stream(&agent.socket, &agent.key).unwrap();
    stream.write_all(&[b'l', 0, 11, 0, 0]).unwrap();
    // The agent gives up and closes; nothing from the host display came back.
    assert_eq!(read_all(&mut stream), b"");
    wait_for(Duration::from_secs(5), "the log line", || {
        agent
            .log()
            .contains("no X11 setup request within")
            .then_some(())
    });
}

#[test]
fn huge_authorization_lengths_are_refused_before_reading_them() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let mut stream = guest_stream(&agent.socket, &agent.key).unwrap();
    stream
        .write_all(&[b'B', 0, 0, 11, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0])
        .unwrap();
    assert_eq!(read_all(&mut stream), b"");
    wait_for(Duration::from_secs(5), "the log line", || {
        agent.log().contains("at most 64 accepted").then_some(())
    });
}

#[test]
fn the_connection_cap_refuses_with_busy_and_frees_up() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &["--max-connections", "3"]);
    let held: Vec<_> = (0..3).map(|_| bridged(&agent.socket, &agent.key)).collect();
    let mut extra = UnixStream::connect(&agent.socket).unwrap();
    let answer = String::from_utf8(read_all(&mut extra)).unwrap();
    assert!(
        answer.contains("\"code\":\"busy\"") && answer.contains("max_connections"),
        "{answer}"
    );
    drop(held);
    wait_for(Duration::from_secs(5), "a slot to free up", || {
        guest_stream(&agent.socket, &agent.key).ok().map(drop)
    });
}

#[test]
fn a_thousand_bad_guests_leave_a_good_one_working_and_nothing_behind() {
    let xvfb = Xvfb::start();
    let (_config_dir, config) = agent_config("handshake_timeout_s = 1\n");
    let mut agent = Agent::start(&xvfb, &["--config", &config]);
    let pid = agent.process.pid();
    let good = bridged(&agent.socket, &agent.key);
    good.intern_atom(false, b"WARMUP").unwrap().reply().unwrap();
    // One failed guest of each kind first, so lazily created state exists for the baseline.
    let wrong = xbridge_proto::Key::generate();
    let _ = guest_stream(&agent.socket, &wrong);
    std::thread::sleep(Duration::from_millis(200));
    let (fds, rss) = (open_fds(pid), rss_kib(pid));

    // Slow guests: they connect and say nothing, and are cut off at the 1 s deadline while the
    // rest goes on.
    let slow: Vec<_> = (0..20)
        .map(|_| UnixStream::connect(&agent.socket).unwrap())
        .collect();
    for i in 0..1000 {
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        match i % 4 {
            0 => {
                let _ = s.write_all(b"\x00\xffnot json at all\n");
            }
            1 => {
                let _ = s.write_all(&vec![b'{'; 5000]);
            }
            2 => drop(s.shutdown(std::net::Shutdown::Both)),
            _ => {
                drop(s);
                let _ = guest_stream(&agent.socket, &wrong);
                continue;
            }
        }
        let _ = read_all(&mut s);
        if i % 100 == 0 {
            good.intern_atom(false, format!("STILL_HERE_{i}").as_bytes())
                .unwrap()
                .reply()
                .unwrap();
        }
    }
    good.intern_atom(false, b"DONE").unwrap().reply().unwrap();
    for mut s in slow {
        assert!(String::from_utf8_lossy(&read_all(&mut s)).contains("\"code\":\"timeout\""));
    }
    wait_for(
        Duration::from_secs(10),
        "descriptors to return to the baseline",
        || (open_fds(pid) <= fds).then_some(()),
    );
    let after = rss_kib(pid);
    assert!(
        after <= rss + 4096,
        "resident memory grew from {rss} KiB to {after} KiB"
    );
    assert!(agent.process.0.try_wait().unwrap().is_none());
}

#[test]
fn two_hundred_concurrent_bridged_clients_move_images_byte_exact() {
    let xvfb = Xvfb::start();
    // Above the default cap of 128, below the X server's own limit of 256 clients.
    let agent = Agent::start(&xvfb, &["--max-connections", "240"]);
    let (socket, key) = (agent.socket.clone(), agent.key.clone());
    // All 200 are connected before any starts pushing images: 200 live transfers at once.
    let all_connected = std::sync::Arc::new(std::sync::Barrier::new(200));
    let workers: Vec<_> = (0..200)
        .map(|i| {
            let (socket, key, all_connected) = (socket.clone(), key.clone(), all_connected.clone());
            std::thread::spawn(move || {
                let conn = bridged(&socket, &key);
                all_connected.wait();
                // 48 rounds of a 64 KiB image: 3 MiB each way per client.
                image_round_trips(&conn, i, 48)
            })
        })
        .collect();
    for w in workers {
        if let Err(e) = w.join().expect("a bridged client panicked") {
            panic!("{e}");
        }
    }
}

#[test]
fn an_agent_killed_and_restarted_is_waited_for_by_the_next_wrapper() {
    let xvfb = Xvfb::start();
    let dir = tempdir();
    let (_, key_path) = key_file(dir.path());
    let socket = dir.path().join("agent.sock");
    let listen = format!("unix:{}", socket.display());
    let mut first = Agent::spawn_on(&xvfb, &key_path, &listen, dir.path());
    wait_for(Duration::from_secs(10), "the first agent", || {
        UnixStream::connect(&socket).ok()
    });
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let guest = GuestConfig::new(&listen, &key_path, "");
    let (auth, cookie) = guest.dm_auth();
    let (_wrapper, mut fd) = spawn_with_displayfd(&guest, None, &auth);
    wait_for(Duration::from_secs(10), "the wrapper to retry", || {
        guest.log_text().contains("retrying in").then_some(())
    });
    let _second = Agent::spawn_on(&xvfb, &key_path, &listen, dir.path());
    let n = read_number(&mut fd, "guest-xwrap");
    connect_with(n, Some(&cookie));
}

#[test]
fn reset_and_half_open_connections_do_not_disturb_the_agent() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let good = bridged(&agent.socket, &agent.key);
    // A guest that sends its hello and closes its writing half: the agent answers, then sees EOF.
    let mut half = UnixStream::connect(&agent.socket).unwrap();
    half.write_all(b"{\"type\":\"hello\",\"version\":1,\"nonce\":\"00\",\"software\":\"x\"}\n")
        .unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = String::from_utf8(read_all(&mut half)).unwrap();
    assert!(answer.contains("refuse"), "{answer}");
    // Guests that vanish mid-session, with X11 traffic in flight in both directions.
    for _ in 0..20 {
        let mut s = guest_stream(&agent.socket, &agent.key).unwrap();
        s.write_all(&[b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        s.write_all(&[
            16, 0, 2, 0, 5, 0, 0, 0, b'H', b'E', b'L', b'L', b'O', 0, 0, 0,
        ])
        .unwrap();
        drop(s);
    }
    // A TCP-style reset: SO_LINGER 0 is not available on unix sockets, so close with data unread.
    for _ in 0..20 {
        let s = guest_stream(&agent.socket, &agent.key).unwrap();
        let mut w = s.try_clone().unwrap();
        w.write_all(&[b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        drop((s, w));
    }
    good.intern_atom(false, b"STILL_FINE")
        .unwrap()
        .reply()
        .unwrap();
    assert!(guest_stream(&agent.socket, &agent.key).is_ok());
}
