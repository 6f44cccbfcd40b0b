//! Command line and `agent.toml`: every setting, where it comes from, and its default.
//! The command line wins over the file; the file wins over the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use xbridge_proto::Endpoint;

use crate::display::Trust;

/// Default address: loopback, which a slirp guest reaches as 10.0.2.2:6010.
pub const DEFAULT_LISTEN: &str = "tcp:127.0.0.1:6010";

#[derive(Debug, Parser)]
#[command(
    name = "host-agent",
    version,
    about = "Let a virtual machine's X clients reach this desktop, without its credentials",
    long_about = "host-agent runs on the host, in your desktop session. A guest (UML, QEMU, a vsock VM) \
connects, proves it holds the pairing key, and gets a byte stream to your X display. The guest \
never sees your X cookie: the agent swaps in its own credential — by default a fresh untrusted \
authorization per connection, which cannot read your screen or inject input.\n\n\
First run `host-agent init` to create the pairing key, then `host-agent` (same as `host-agent serve`).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the pairing key and show how to give it to a guest.
    Init(InitArgs),
    /// Listen for guests (the default when no command is given).
    Serve(ServeArgs),
    /// Serve exactly one guest on stdin/stdout (slirp `add exec`, QEMU guestfwd, ssh). Never writes to stderr.
    Stdio(StdioArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the key [default: $XDG_CONFIG_HOME/xbridge/guest.key]
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Replace an existing key (paired guests will need the new one)
    #[arg(long)]
    pub force: bool,
}

/// Settings shared by `serve` and `stdio`.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// Pairing key file [default: $XDG_CONFIG_HOME/xbridge/guest.key]
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Host X display [default: $DISPLAY]
    #[arg(long, value_name = "DISPLAY")]
    pub display: Option<String>,
    /// Xauthority file for the host display [default: $XAUTHORITY, then ~/.Xauthority]
    #[arg(long, value_name = "PATH")]
    pub xauthority: Option<PathBuf>,
    /// What guests may do: `untrusted` (SECURITY extension; no screen capture or input injection) or `trusted` (full access)
    #[arg(long, value_enum)]
    pub trust: Option<Trust>,
    /// Configuration file [default: $XDG_CONFIG_HOME/xbridge/agent.toml, if present]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Write logs to this file (in `stdio` mode the only place logs go)
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// More log output: -v for debug, -vv for trace (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on, repeatable: tcp:HOST:PORT, unix:PATH, vsock:CID:PORT [default: tcp:127.0.0.1:6010]
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<Endpoint>,
    /// Allow TCP addresses other machines can reach
    #[arg(long)]
    pub allow_remote: bool,
    /// Guest connections served at once; more are refused
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct StdioArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `agent.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Vec<Endpoint>>,
    pub key: Option<PathBuf>,
    pub display: Option<String>,
    pub xauthority: Option<PathBuf>,
    pub trust: Option<Trust>,
    pub allow_remote: Option<bool>,
    pub max_connections: Option<usize>,
    pub log_file: Option<PathBuf>,
    pub handshake_timeout_s: Option<u64>,
    pub grace_s: Option<u64>,
}

/// Every setting, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<Endpoint>,
    pub key: PathBuf,
    pub display: Option<String>,
    pub xauthority: Option<PathBuf>,
    pub trust: Trust,
    pub allow_remote: bool,
    pub max_connections: usize,
    pub log_file: Option<PathBuf>,
    pub verbose: u8,
    pub handshake_timeout: Duration,
    pub grace: Duration,
}

/// A configuration problem: the caller exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `$XDG_CONFIG_HOME/xbridge`, else `~/.config/xbridge`.
pub fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"))
        .join("xbridge")
}

/// The default pairing key location.
pub fn default_key_path() -> PathBuf {
    config_dir().join("guest.key")
}

fn load_file(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config_dir().join("agent.toml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(FileConfig::default())
        }
        Err(e) => {
            return Err(ConfigError(format!(
                "cannot read config file {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
}

/// Merges the command line, the file and the defaults.
pub fn resolve(serve: &ServeArgs) -> Result<Settings, ConfigError> {
    let common = &serve.common;
    let file = load_file(common.config.as_deref())?;
    let listen = if !serve.listen.is_empty() {
        serve.listen.clone()
    } else {
        file.listen
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_LISTEN.parse().expect("valid default")])
    };
    let max_connections = serve
        .max_connections
        .or(file.max_connections)
        .unwrap_or(128);
    if max_connections == 0 {
        return Err(ConfigError("max_connections must be at least 1".into()));
    }
    Ok(Settings {
        listen,
        key: common
            .key
            .clone()
            .or(file.key)
            .unwrap_or_else(default_key_path),
        display: common
            .display
            .clone()
            .or(file.display)
            .or_else(|| std::env::var("DISPLAY").ok()),
        xauthority: common
            .xauthority
            .clone()
            .or(file.xauthority)
            .or_else(|| std::env::var_os("XAUTHORITY").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".Xauthority"))),
        trust: common.trust.or(file.trust).unwrap_or(Trust::Untrusted),
        allow_remote: serve.allow_remote || file.allow_remote.unwrap_or(false),
        max_connections,
        log_file: common.log_file.clone().or(file.log_file),
        verbose: common.verbose,
        handshake_timeout: Duration::from_secs(file.handshake_timeout_s.unwrap_or(5)),
        grace: Duration::from_secs(file.grace_s.unwrap_or(5)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<FileConfig>("lisen = []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn file_values_parse() {
        let cfg: FileConfig = toml::from_str(
            "listen = [\"unix:/tmp/a\", \"tcp:127.0.0.1:7000\"]\ntrust = \"trusted\"",
        )
        .unwrap();
        assert_eq!(cfg.listen.unwrap().len(), 2);
        assert_eq!(cfg.trust, Some(Trust::Trusted));
    }
}
