//! The readiness signal as LightDM, GDM, xdm and xinit see it: SIGUSR1 from the wrapper's own
//! pid, only when asked for (SIGUSR1 ignored at exec), never before the display accepts
//! clients, and again after every server reset.
//!
//! A plain `main`: it blocks SIGUSR1 before any thread exists and waits for it synchronously.

use std::process::{Command, Stdio};
use std::time::Duration;

use xbridge_e2e::*;

const TRIALS: usize = 100;

fn block_sigusr1() -> libc::sigset_t {
    // SAFETY: building and applying a signal set; no threads exist yet.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
        set
    }
}

/// Waits for SIGUSR1; returns the sender's pid.
fn wait_usr1(set: &libc::sigset_t, limit: Duration) -> Option<i32> {
    let timeout = libc::timespec {
        tv_sec: limit.as_secs() as _,
        tv_nsec: limit.subsec_nanos() as _,
    };
    // SAFETY: siginfo_t is plain data filled by the call.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        (libc::sigtimedwait(set, &mut info, &timeout) == libc::SIGUSR1).then(|| info.si_pid())
    }
}

/// Spawns the wrapper as a display manager would; `ask` = start it with SIGUSR1 ignored.
fn spawn(guest: &GuestConfig, n: u16, auth: &std::path::Path, ask: bool) -> Guard {
    let mut command = Command::new(bin("guest-xwrap"));
    command
        .arg("--config")
        .arg(&guest.path)
        .arg(format!(":{n}"))
        .arg("-auth")
        .arg(auth)
        .stderr(Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: signal and sigprocmask are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::signal(
                libc::SIGUSR1,
                if ask { libc::SIG_IGN } else { libc::SIG_DFL },
            );
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    Guard(command.spawn().expect("spawn guest-xwrap"))
}

/// Stops a wrapper, then consumes the reset announcements it sent after the probe client
/// disconnected (the nested server resets when its last client leaves, and that is relayed).
fn stop(mut wrapper: Guard, set: &libc::sigset_t) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(wrapper.pid() as i32, libc::SIGTERM) };
    let status = wrapper.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    while let Some(pid) = wait_usr1(set, Duration::ZERO) {
        assert_eq!(pid, wrapper.pid() as i32, "a SIGUSR1 from a stranger");
    }
}

fn main() {
    let set = block_sigusr1();
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let (auth, cookie) = guest.dm_auth();
    let mut failures = Vec::new();

    for trial in 0..TRIALS {
        let n = free_display();
        let wrapper = spawn(&guest, n, &auth, true);
        match wait_usr1(&set, Duration::from_secs(30)) {
            Some(pid) if pid == wrapper.pid() as i32 => {
                if let Err(e) = try_connect_with(n, Some(&cookie)) {
                    failures.push(format!(
                        "trial {trial}: signalled, but a client could not connect at once: {e}"
                    ));
                }
            }
            Some(pid) => failures.push(format!(
                "trial {trial}: SIGUSR1 from pid {pid} ({}), not the wrapper {}",
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .replace('\0', " "),
                wrapper.pid()
            )),
            None => failures.push(format!(
                "trial {trial}: no SIGUSR1 within 30 s; log:\n{}",
                guest.log_text()
            )),
        }
        if !failures.is_empty() {
            break;
        }
        stop(wrapper, &set);
    }
    println!(
        "test sigusr1_from_the_wrapper_and_never_early ({TRIALS} trials) ... {}",
        if failures.is_empty() { "ok" } else { "FAILED" }
    );
    if !failures.is_empty() {
        eprintln!("{}", failures.join("\n"));
        std::process::exit(1);
    }

    // A reset (SIGHUP, as xdm sends after a session) is announced again.
    let n = free_display();
    let wrapper = spawn(&guest, n, &auth, true);
    let first = wait_usr1(&set, Duration::from_secs(30));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(wrapper.pid() as i32, libc::SIGHUP) };
    let second = wait_usr1(&set, Duration::from_secs(30));
    let relayed = first == Some(wrapper.pid() as i32) && second == Some(wrapper.pid() as i32);
    if !relayed {
        failures.push(format!(
            "SIGHUP reset: first {first:?}, second {second:?}, wrapper {}",
            wrapper.pid()
        ));
    }
    try_connect_with(n, Some(&cookie)).expect("display answers after the reset");
    stop(wrapper, &set);
    println!(
        "test sighup_reset_relays_a_second_sigusr1 ... {}",
        if relayed { "ok" } else { "FAILED" }
    );

    // Not asked: no signal at all, though the display comes up.
    let n = free_display();
    let wrapper = spawn(&guest, n, &auth, false);
    wait_for(Duration::from_secs(30), "the nested display", || {
        try_connect_with(n, Some(&cookie)).ok()
    });
    let unasked = wait_usr1(&set, Duration::from_millis(500));
    if let Some(pid) = unasked {
        failures.push(format!(
            "SIGUSR1 from {pid} although the parent did not ask"
        ));
    }
    stop(wrapper, &set);
    println!(
        "test no_sigusr1_unless_asked ... {}",
        if unasked.is_none() { "ok" } else { "FAILED" }
    );

    let passed = 3 - [
        failures.iter().any(|f| f.starts_with("trial")),
        !relayed,
        unasked.is_some(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    println!(
        "\ntest result: {}. {passed} passed; {} failed",
        if failures.is_empty() { "ok" } else { "FAILED" },
        3 - passed
    );
    if !failures.is_empty() {
        eprintln!("{}", failures.join("\n"));
        std::process::exit(1);
    }
}
