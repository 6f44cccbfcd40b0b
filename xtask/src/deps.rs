//! Debian packages: what the tests and the demo run, checked with dpkg and installed with apt.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};

/// Everything the tests and the demo start for real.
pub const PACKAGES: &[&str] = &[
    "xvfb",           // the host display in tests
    "xserver-xephyr", // nested server
    "xnest",          // the other nested server
    "x11-apps",       // x11perf, xclock
    "x11-utils",      // xdpyinfo, xwininfo
    "xauth",
    "xdotool",
    "imagemagick", // screenshots of the demo
    "xinit",
    "xdm",
    "gdm3",            // gdm-x-session
    "user-mode-linux", // the demo guest
    "slirp",
    "socat",          // the benchmark baselines: a byte pump,
    "openssh-server", // and OpenSSH X11 forwarding on loopback
    "openssh-client",
    "dbus",
    "qemu-system-x86", // the guestfwd recipe's command line is checked against real QEMU
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The packages not yet installed.
pub fn missing() -> Vec<&'static str> {
    PACKAGES.iter().copied().filter(|p| !installed(p)).collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs what is missing when root; otherwise prints the command and exits 2.
pub fn run() -> anyhow::Result<ExitCode> {
    let missing = missing();
    if missing.is_empty() {
        println!(
            "xtask: all {} Debian packages are installed",
            PACKAGES.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let line = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        eprintln!("xtask: missing Debian packages; install them with:\n\n  sudo apt-get update && sudo {line}\n");
        return Ok(ExitCode::from(2));
    }
    println!("xtask: installing {}", missing.join(" "));
    for args in [
        vec!["update", "-q"],
        line.split_whitespace().skip(1).collect(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    let still = self::missing();
    if !still.is_empty() {
        bail!("still missing after apt-get: {}", still.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}
