//! `guest-xwrap install --dm …` and `uninstall`: make a display manager run guest-xwrap as its
//! X server, reversibly.
//!
//! Installing is a [`Plan`] of steps, worked out first (and all that `--dry-run` prints). Every
//! file touched is recorded with its previous contents in `/var/lib/xbridge/installed-DM.json`,
//! so `uninstall` puts back exactly what was there — or removes what was not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The display managers we know how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dm {
    /// GDM 43 or later (Debian's gdm3): no server-path setting before GDM 50, so /usr/bin/Xorg is diverted.
    Gdm3,
    /// GDM 2.x: a `[server-xbridge]` entry in custom.conf.
    GdmLegacy,
    /// LightDM: `xserver-command=` in lightdm.conf.d.
    Lightdm,
    /// SDDM: `[X11] ServerPath=` in sddm.conf.d.
    Sddm,
    /// xdm: the Xservers line.
    Xdm,
}

impl Dm {
    fn name(self) -> &'static str {
        match self {
            Dm::Gdm3 => "gdm3",
            Dm::GdmLegacy => "gdm-legacy",
            Dm::Lightdm => "lightdm",
            Dm::Sddm => "sddm",
            Dm::Xdm => "xdm",
        }
    }
}

/// One change to the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write a file with these contents (creating its directory if needed).
    Write { path: PathBuf, contents: String },
    /// `dpkg-divert --local --rename` a file out of the way.
    Divert { path: PathBuf, to: PathBuf },
    /// A symbolic link.
    Symlink { path: PathBuf, target: PathBuf },
}

/// What `install` does, in order, and what the user should know.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

impl Plan {
    /// The exact files and lines, for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            match step {
                Step::Write { path, contents } => {
                    let _ = writeln!(out, "write {}:", path.display());
                    for line in contents.lines() {
                        let _ = writeln!(out, "    {line}");
                    }
                }
                Step::Divert { path, to } => {
                    let _ = writeln!(
                        out,
                        "run   dpkg-divert --local --rename --divert {} --add {}",
                        to.display(),
                        path.display()
                    );
                }
                Step::Symlink { path, target } => {
                    let _ = writeln!(out, "link  {} -> {}", path.display(), target.display());
                }
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// The starter configuration, every key explained.
pub const SAMPLE_CONFIG: &str = r#"# /etc/xbridge/xwrap.toml — guest-xwrap's settings. Every key is optional.
# Check the whole chain with `guest-xwrap check`.

# Where host-agent is: "tcp:10.0.2.2:6010" (slirp: the host's loopback), "tcp:10.0.2.1:6010"
# (slirp `add exec`), "tcp:10.0.2.100:6010" (QEMU guestfwd), "vsock:2:6010", "unix:/path".
#agent = "tcp:10.0.2.2:6010"

# The pairing key from the host's `host-agent init`. Readable only by the user the X server
# runs as (root for xdm, LightDM, SDDM; Debian-gdm for GDM 43 and later).
#key_file = "/etc/xbridge/guest.key"

# "auto" (Xephyr if installed, else Xnest), "Xephyr", "Xnest", or a path.
#server = "auto"

# "auto" (fits the host screen the agent reports) or "WIDTHxHEIGHT".
#screen = "auto"
#fullscreen = false
#resizeable = true

# The window title; by default it names this guest's hostname and display.
#title = "my guest"

# "host" (the host's XKB layout, from the agent) or "default" (the nested server's own).
#keymap = "host"

# Seconds to wait for the nested server, and for the agent to come up.
#ready_timeout_s = 30
#agent_wait_s = 60

# Default /var/log/xbridge/xwrap-N.log, falling back to stderr.
#log_file = "/var/log/xbridge/xwrap.log"

# Appended to the nested server's arguments.
#extra_args = []
"#;

/// Installed GDM's major version, from dpkg.
fn gdm_major() -> Option<u32> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "gdm3"])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    version
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// `[section] key=value` set in an INI-style file's text: replaces an existing key in the
/// section, else adds it at the section's start, else appends the section.
pub fn set_ini(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut in_section = false;
    let mut done = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed == header;
            out.push(line.to_owned());
            if in_section && !done {
                out.push(format!("{key}={value}"));
                done = true;
            }
            continue;
        }
        let is_key = trimmed
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key);
        if in_section && is_key {
            continue; // replaced by the line added under the header
        }
        out.push(line.to_owned());
    }
    if !done {
        if out.last().is_some_and(|l| !l.is_empty()) {
            out.push(String::new());
        }
        out.push(header);
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

/// xdm's Xservers with every local server line pointed at guest-xwrap, display kept.
pub fn xservers_with(text: &str, wrapper: &Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next()) {
            (Some(display), Some("local")) if display.starts_with(':') => {
                let _ = writeln!(
                    out,
                    "{display} local {} {display} -nolisten tcp",
                    wrapper.display()
                );
            }
            _ => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Works out the steps for a display manager. Reads current files; changes nothing.
pub fn plan(dm: Dm, wrapper: &Path) -> Plan {
    let mut plan = Plan::default();
    let w = wrapper.display().to_string();
    if !Path::new("/etc/xbridge/xwrap.toml").exists() {
        plan.steps.push(Step::Write {
            path: "/etc/xbridge/xwrap.toml".into(),
            contents: SAMPLE_CONFIG.into(),
        });
    }
    match dm {
        Dm::Gdm3 => {
            match gdm_major() {
                Some(major) if major >= 50 => {
                    plan.steps.push(Step::Write {
                        path: "/etc/systemd/system/gdm.service.d/50-xbridge.conf".into(),
                        contents: format!("[Service]\nEnvironment=GDM_X_SERVER_PATH={w}\n"),
                    });
                }
                _ => {
                    plan.steps.push(Step::Divert {
                        path: "/usr/bin/Xorg".into(),
                        to: "/usr/bin/Xorg.xbridge-real".into(),
                    });
                    plan.steps.push(Step::Symlink {
                        path: "/usr/bin/Xorg".into(),
                        target: wrapper.into(),
                    });
                }
            }
            let conf = if Path::new("/etc/gdm3").is_dir() {
                "/etc/gdm3/daemon.conf"
            } else {
                "/etc/gdm/custom.conf"
            };
            plan.steps.push(Step::Write {
                path: conf.into(),
                contents: set_ini(&read(conf), "daemon", "WaylandEnable", "false"),
            });
            plan.notes.push("GDM runs the X server as its own user (Debian-gdm): key_file must be readable by it, e.g. `chown Debian-gdm /etc/xbridge/guest.key`, and /var/log/xbridge writable (or set log_file). `guest-xwrap check`, run as root, tries the key as that user.".into());
        }
        Dm::GdmLegacy => {
            let conf = "/etc/gdm/custom.conf";
            let text = set_ini(&read(conf), "servers", "0", "xbridge");
            let text = set_ini(&text, "server-xbridge", "name", "xbridge nested server");
            let text = set_ini(&text, "server-xbridge", "command", &w);
            plan.steps.push(Step::Write {
                path: conf.into(),
                contents: set_ini(&text, "server-xbridge", "flexible", "true"),
            });
        }
        Dm::Lightdm => plan.steps.push(Step::Write {
            path: "/etc/lightdm/lightdm.conf.d/50-xbridge.conf".into(),
            contents: format!(
                "# guest-xwrap install --dm lightdm\n[Seat:*]\nxserver-command={w}\n"
            ),
        }),
        Dm::Sddm => plan.steps.push(Step::Write {
            path: "/etc/sddm.conf.d/50-xbridge.conf".into(),
            contents: format!("# guest-xwrap install --dm sddm\n[X11]\nServerPath={w}\n"),
        }),
        Dm::Xdm => {
            let conf = "/etc/X11/xdm/Xservers";
            let current = read(conf);
            let text = if current.lines().any(|l| l.trim_start().starts_with(':')) {
                current
            } else {
                format!("{current}:0 local /usr/bin/X :0\n")
            };
            plan.steps.push(Step::Write {
                path: conf.into(),
                contents: xservers_with(&text, wrapper),
            });
        }
    }
    plan
}

/// What was there before, to put back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Previous contents of each written file (`None`: it did not exist).
    files: BTreeMap<PathBuf, Option<Vec<u8>>>,
    /// Directories created, outermost first.
    dirs: Vec<PathBuf>,
    diverted: Vec<PathBuf>,
    links: Vec<PathBuf>,
}

/// Whether `install --dm dm` was run here (and not undone).
pub fn is_installed(dm: Dm) -> bool {
    record_path(dm).exists()
}

fn record_path(dm: Dm) -> PathBuf {
    PathBuf::from(format!("/var/lib/xbridge/installed-{}.json", dm.name()))
}

fn create_dirs(dir: &Path, record: &mut Record) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    for p in missing.into_iter().rev() {
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        record.dirs.push(p);
    }
    Ok(())
}

/// Carries out a plan and records how to undo it.
pub fn install(dm: Dm, plan: &Plan) -> anyhow::Result<()> {
    let record_file = record_path(dm);
    if record_file.exists() {
        bail!("xbridge is already installed for {} ({} exists); run `guest-xwrap uninstall --dm {}` first", dm.name(), record_file.display(), dm.name());
    }
    let mut record = Record::default();
    create_dirs(record_file.parent().expect("has a parent"), &mut record)?;
    for step in &plan.steps {
        match step {
            Step::Write { path, contents } => {
                create_dirs(path.parent().expect("absolute path"), &mut record)?;
                record
                    .files
                    .entry(path.clone())
                    .or_insert(std::fs::read(path).ok());
                let mode = std::fs::metadata(path)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0o644);
                std::fs::write(path, contents)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Step::Divert { path, to } => {
                let status = Command::new("dpkg-divert")
                    .args(["--local", "--rename", "--quiet", "--divert"])
                    .arg(to)
                    .arg("--add")
                    .arg(path)
                    .status()
                    .context("cannot run dpkg-divert")?;
                if !status.success() {
                    bail!("dpkg-divert of {} failed", path.display());
                }
                record.diverted.push(path.clone());
            }
            Step::Symlink { path, target } => {
                std::os::unix::fs::symlink(target, path)
                    .with_context(|| format!("cannot link {}", path.display()))?;
                record.links.push(path.clone());
            }
        }
    }
    std::fs::write(&record_file, serde_json::to_vec_pretty(&record)?)?;
    Ok(())
}

/// Puts back everything `install` changed.
pub fn uninstall(dm: Dm) -> anyhow::Result<()> {
    let record_file = record_path(dm);
    let text = std::fs::read(&record_file).with_context(|| {
        format!(
            "xbridge is not installed for {} (no {})",
            dm.name(),
            record_file.display()
        )
    })?;
    let record: Record = serde_json::from_slice(&text)
        .with_context(|| format!("{} is damaged", record_file.display()))?;
    for link in &record.links {
        std::fs::remove_file(link).with_context(|| format!("cannot remove {}", link.display()))?;
    }
    for path in &record.diverted {
        let status = Command::new("dpkg-divert")
            .args(["--local", "--rename", "--quiet", "--remove"])
            .arg(path)
            .status()?;
        if !status.success() {
            bail!("dpkg-divert --remove {} failed", path.display());
        }
    }
    for (path, before) in &record.files {
        match before {
            Some(bytes) => std::fs::write(path, bytes)
                .with_context(|| format!("cannot restore {}", path.display()))?,
            None => std::fs::remove_file(path)
                .with_context(|| format!("cannot remove {}", path.display()))?,
        }
    }
    std::fs::remove_file(&record_file)?;
    for dir in record.dirs.iter().rev() {
        // Only if empty: anything else put there since is not ours to delete.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_edits() {
        assert_eq!(
            set_ini(
                "[daemon]\nWaylandEnable=true\nX=1\n",
                "daemon",
                "WaylandEnable",
                "false"
            ),
            "[daemon]\nWaylandEnable=false\nX=1\n"
        );
        assert_eq!(
            set_ini("# c\n[security]\n", "daemon", "WaylandEnable", "false"),
            "# c\n[security]\n\n[daemon]\nWaylandEnable=false\n"
        );
        assert_eq!(set_ini("", "daemon", "A", "b"), "[daemon]\nA=b\n");
    }

    #[test]
    fn xservers_lines() {
        let text = "# comment\n:0 local /usr/bin/X :0 vt7 -nolisten tcp\nfoo:1 foreign\n";
        assert_eq!(
            xservers_with(text, Path::new("/usr/bin/guest-xwrap")),
            "# comment\n:0 local /usr/bin/guest-xwrap :0 -nolisten tcp\nfoo:1 foreign\n"
        );
    }

    #[test]
    fn every_dm_has_a_plan_naming_the_wrapper() {
        for dm in [Dm::Gdm3, Dm::GdmLegacy, Dm::Lightdm, Dm::Sddm, Dm::Xdm] {
            let text = plan(dm, Path::new("/usr/bin/guest-xwrap")).describe();
            assert!(text.contains("/usr/bin/guest-xwrap"), "{dm:?}: {text}");
        }
    }
}
