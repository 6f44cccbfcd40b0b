//! `cargo xtask fuzz [--seconds N] [TARGET…]`: every libFuzzer target in `fuzz/`, each for N
//! seconds (default 60), starting from the committed seed corpus.
//!
//! cargo-fuzz needs nightly-only compiler flags; this machine has one stable toolchain, so the
//! runs set `RUSTC_BOOTSTRAP=1`, which lets stable rustc accept them.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};

use crate::project_root;

const TARGETS: &[&str] = &["handshake", "setup", "endpoint", "args"];

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn have_cargo_fuzz() -> bool {
    Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds takes a number")?
            }
            t if TARGETS.contains(&t) => targets.push(t.to_owned()),
            other => bail!(
                "unknown argument {other}; targets are {}",
                TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    if !have_cargo_fuzz() {
        println!("xtask: installing cargo-fuzz from crates.io (a few minutes, once)");
        let status = Command::new(cargo())
            .args(["install", "--locked", "cargo-fuzz"])
            .status()?;
        if !status.success() {
            bail!("`cargo install cargo-fuzz` failed");
        }
    }
    let root = project_root();
    let mut report = Vec::new();
    for target in &targets {
        // New inputs go to a scratch corpus; the committed seeds stay as they are.
        let scratch = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)?;
        println!("xtask: fuzzing {target} for {seconds} s");
        let out = Command::new(cargo())
            .args(["fuzz", "run", target])
            .arg(&scratch)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(&root)
            .output()
            .context("cannot run cargo fuzz")?;
        let log = String::from_utf8_lossy(&out.stderr);
        let runs = log.lines().rev().find_map(|l| {
            l.strip_prefix("Done ")
                .and_then(|r| r.split_whitespace().next().map(str::to_owned))
        });
        match (out.status.success(), runs) {
            (true, Some(runs)) => report.push(format!("{target}: {runs} executions, no crash")),
            _ => {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                report.push(format!("{target}: FAILED (see fuzz/artifacts/{target}/)"));
            }
        }
    }
    println!(
        "\nfuzz report ({seconds} s per target):\n  {}",
        report.join("\n  ")
    );
    Ok(if report.iter().any(|l| l.contains("FAILED")) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
