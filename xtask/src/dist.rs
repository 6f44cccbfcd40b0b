//! `cargo xtask dist`: the Debian packages `xbridge-host` and `xbridge-guest`, built with
//! cargo-deb, with man pages and shell completions generated from the clap definitions.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::project_root;

/// Where generated assets go; the packages' `assets` lists point here.
pub fn dist_dir() -> PathBuf {
    project_root().join("target/dist")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Man pages (gzipped) and bash/zsh/fish completions for both programs.
pub fn generate_assets() -> anyhow::Result<()> {
    let dist = dist_dir();
    let (man, completions) = (dist.join("man"), dist.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let commands = [
        ("host-agent", xbridge_host_agent::config::Cli::command()),
        ("guest-xwrap", xbridge_guest_xwrap::cli::Cli::command()),
    ];
    for (name, command) in commands {
        let page = man.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(command.clone()).render(&mut text)?;
        // Each subcommand gets its section in the same page.
        for sub in command.get_subcommands() {
            let mut sub_text = Vec::new();
            clap_mangen::Man::new(sub.clone().name(format!("{name}-{}", sub.get_name())))
                .render(&mut sub_text)?;
            text.extend_from_slice(b"\n");
            text.extend(sub_text);
        }
        std::fs::write(&page, text)?;
        let status = Command::new("gzip")
            .args(["-9nf"])
            .arg(&page)
            .status()
            .context("gzip")?;
        if !status.success() {
            bail!("gzip {} failed", page.display());
        }
        for (shell, file) in [
            (Shell::Bash, name.to_owned()),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut command = command.clone();
            let mut out = std::fs::File::create(completions.join(file))?;
            clap_complete::generate(shell, &mut command, name, &mut out);
        }
    }
    std::fs::write(
        dist.join("xwrap.toml"),
        xbridge_guest_xwrap::install::SAMPLE_CONFIG,
    )?;
    Ok(())
}

fn ensure_cargo_deb() -> anyhow::Result<()> {
    let present = Command::new(cargo())
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        println!("xtask: installing cargo-deb from crates.io (a few minutes, once)");
        let status = Command::new(cargo())
            .args(["install", "--locked", "cargo-deb"])
            .status()?;
        if !status.success() {
            bail!("`cargo install cargo-deb` failed");
        }
    }
    Ok(())
}

/// Builds both packages; returns their paths.
pub fn build_debs() -> anyhow::Result<Vec<PathBuf>> {
    ensure_cargo_deb()?;
    generate_assets()?;
    let root = project_root();
    let mut debs = Vec::new();
    for package in ["xbridge-host-agent", "xbridge-guest-xwrap"] {
        let out = Command::new(cargo())
            .args(["deb", "--quiet", "-p", package])
            .current_dir(&root)
            .output()
            .context("cannot run cargo deb")?;
        if !out.status.success() {
            bail!(
                "cargo deb -p {package} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(str::trim)
            .map(PathBuf::from)
            .context("cargo deb printed no path")?;
        debs.push(path);
    }
    Ok(debs)
}

/// One line of `dpkg-deb -c`: mode string and path.
fn contents(deb: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new("dpkg-deb").arg("-c").arg(deb).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((
                fields.first()?.to_string(),
                fields.get(5)?.trim_start_matches('.').to_string(),
            ))
        })
        .collect())
}

/// Checks what each package holds and with which modes, then installs both into a throw-away
/// root with `dpkg --root`.
pub fn check_debs(debs: &[PathBuf]) -> anyhow::Result<()> {
    let expected: &[(&str, &[(&str, &str)])] = &[
        (
            "xbridge-host",
            &[
                ("/usr/bin/host-agent", "-rwxr-xr-x"),
                (
                    "/usr/lib/systemd/user/xbridge-host-agent.socket",
                    "-rw-r--r--",
                ),
                (
                    "/usr/lib/systemd/user/xbridge-host-agent.service",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/xbridge/xbridge-host-agent.desktop",
                    "-rw-r--r--",
                ),
                ("/usr/share/man/man1/host-agent.1.gz", "-rw-r--r--"),
                (
                    "/usr/share/bash-completion/completions/host-agent",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/zsh/vendor-completions/_host-agent",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/fish/vendor_completions.d/host-agent.fish",
                    "-rw-r--r--",
                ),
                ("/usr/share/xbridge/uml/run-guest.sh", "-rwxr-xr-x"),
            ],
        ),
        (
            "xbridge-guest",
            &[
                ("/usr/bin/guest-xwrap", "-rwxr-xr-x"),
                (
                    "/usr/share/doc/xbridge-guest/examples/xwrap.toml",
                    "-rw-r--r--",
                ),
                ("/usr/share/man/man1/guest-xwrap.1.gz", "-rw-r--r--"),
                (
                    "/usr/share/bash-completion/completions/guest-xwrap",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/zsh/vendor-completions/_guest-xwrap",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/fish/vendor_completions.d/guest-xwrap.fish",
                    "-rw-r--r--",
                ),
                (
                    "/usr/share/xbridge/dm/lightdm-50-xbridge.conf",
                    "-rw-r--r--",
                ),
                ("/usr/share/xbridge/dm/sddm-50-xbridge.conf", "-rw-r--r--"),
                ("/usr/share/xbridge/dm/Xservers", "-rw-r--r--"),
            ],
        ),
    ];
    for (name, files) in expected {
        let deb = debs
            .iter()
            .find(|d| {
                d.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}_")))
            })
            .with_context(|| format!("no {name} package among {debs:?}"))?;
        let listing = contents(deb)?;
        for (path, mode) in *files {
            match listing.iter().find(|(_, p)| p == path) {
                Some((m, _)) if m == mode => {}
                Some((m, _)) => bail!("{name}: {path} has mode {m}, expected {mode}"),
                None => bail!("{name}: {path} is missing from {}", deb.display()),
            }
        }
        println!(
            "xtask: {} holds the {} expected files with the right modes",
            deb.display(),
            files.len()
        );
    }
    let root = tempfile_dir()?;
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "")?;
    let status = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-depends",
            "--force-script-chrootless",
            "--force-not-root",
            "-i",
        ])
        .args(debs)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("dpkg --root {} -i failed", root.display());
    }
    for path in [
        "usr/bin/host-agent",
        "usr/bin/guest-xwrap",
        "usr/lib/systemd/user/xbridge-host-agent.socket",
    ] {
        if !root.join(path).exists() {
            bail!("{path} missing after dpkg --root install");
        }
    }
    println!(
        "xtask: both packages install into a throw-away root ({})",
        root.display()
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = project_root().join("target/dpkg-root");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub fn run() -> anyhow::Result<ExitCode> {
    let debs = build_debs()?;
    check_debs(&debs)?;
    for deb in &debs {
        println!("{}", deb.display());
    }
    Ok(ExitCode::SUCCESS)
}
