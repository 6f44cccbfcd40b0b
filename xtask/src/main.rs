//! Project tasks: `cargo xtask deps | test | demo`.
//!
//! # Layout
//! - [`deps`]: the Debian packages tests and demo need; installs them as root, else prints the line.
//! - [`test`]: deps, formatting, lints, then every test in the workspace.
//! - [`demo`]: a UML guest's display manager on your display (or a headless Xvfb).
//! - [`fuzz`]: the libFuzzer targets in `fuzz/`.
//! - [`dist`]: the `.deb` packages, man pages and completions.
//! - [`xdisplay`]: private Xvfb displays and cookie files for demo and bench.
//! - [`bench`]: readiness, throughput and agent cost against baselines in the same run.

mod bench;
mod demo;
mod deps;
mod dist;
mod fuzz;
mod test;
mod xdisplay;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  deps    install the Debian packages the tests and the demo need (as root; otherwise prints the apt-get line and exits 2)
  test    deps, then cargo fmt --check, clippy, and every test (unit and end-to-end with real X servers)
  demo    a real UML guest's display manager on your display, or on a headless Xvfb with a screenshot
          [--dm xdm|xinit] [--mode tcp|exec] [--server Xephyr|Xnest] [--headless] [--seconds N]
  dist    build the xbridge-host and xbridge-guest .deb packages (cargo-deb), check and test-install them
  bench   readiness, round trip, bulk and scale against direct, socat and OpenSSH; agent cost [--quick] [--smoke]
  fuzz    run every fuzz target (handshake, setup, endpoint, args) [--seconds N, default 60] [TARGET…]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("deps") => deps::run(),
        Some("test") => test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("dist") => dist::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("xtask: {e:#}");
        ExitCode::FAILURE
    })
}

/// The repository root, found from this crate's manifest directory.
fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
