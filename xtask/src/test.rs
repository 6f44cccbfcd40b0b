//! `cargo xtask test`: the README's test command and what CI runs.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

use crate::{deps, project_root};

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(project_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Extra arguments go to `cargo test` (e.g. a test name filter).
pub fn run(extra: &[String]) -> anyhow::Result<ExitCode> {
    let code = deps::run()?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests run host-agent and guest-xwrap as real programs; `cargo test` only
    // builds other packages' binaries as test harnesses, so build the real ones first.
    cargo(&["build", "--workspace", "--bins"])?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)?;
    // The packages: built with cargo-deb, contents and modes checked, test-installed.
    let debs = crate::dist::build_debs()?;
    crate::dist::check_debs(&debs)?;
    // The benchmark harness runs and writes a well-formed report (no timing is judged here).
    crate::bench::run(&["--smoke".to_owned()])?;
    crate::bench::check_report(&project_root().join("target/bench"))?;
    Ok(ExitCode::SUCCESS)
}
