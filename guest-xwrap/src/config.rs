//! `xwrap.toml`: where the agent is, which nested server to run and how it should look.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use xbridge_proto::Endpoint;

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/xbridge/xwrap.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "XBRIDGE_XWRAP_CONFIG";

/// Every setting, with its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the host agent is: `tcp:10.0.2.2:6010` (slirp to host loopback), `tcp:10.0.2.1:6010`
    /// (slirp `add exec`), `vsock:2:6010`, `unix:/path`.
    pub agent: Endpoint,
    /// The pairing key, readable by root only.
    pub key_file: PathBuf,
    /// `auto` (Xephyr if installed, else Xnest), `Xephyr`, `Xnest`, or a path.
    pub server: String,
    /// `auto` (fits the host screen) or `WxH`.
    pub screen: String,
    pub fullscreen: bool,
    pub resizeable: bool,
    /// Window title; default names this guest's hostname and display.
    pub title: Option<String>,
    /// `host`: use the host's XKB names from the agent; `default`: the nested server's own.
    pub keymap: KeymapChoice,
    pub ready_timeout_s: u64,
    pub agent_wait_s: u64,
    /// Default `/var/log/xbridge/xwrap-N.log`, falling back to stderr.
    pub log_file: Option<PathBuf>,
    /// Appended to the nested server's arguments.
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeymapChoice {
    Host,
    Default,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent: "tcp:10.0.2.2:6010".parse().expect("valid default"),
            key_file: PathBuf::from("/etc/xbridge/guest.key"),
            server: "auto".into(),
            screen: "auto".into(),
            fullscreen: false,
            resizeable: true,
            title: None,
            keymap: KeymapChoice::Host,
            ready_timeout_s: 30,
            agent_wait_s: 60,
            log_file: None,
            extra_args: Vec::new(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads from `explicit`, else `$XBRIDGE_XWRAP_CONFIG`, else [`DEFAULT_CONFIG`]; a missing
    /// default file means all defaults, a missing named file is an error.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, PathBuf), ConfigError> {
        let named = explicit.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let path = named
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text)
                .map(|c| (c, path.clone()))
                .map_err(|e| ConfigError(format!("config file {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => {
                Ok((Config::default(), path))
            }
            Err(e) => Err(ConfigError(format!(
                "cannot read config file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Parses TOML text; unknown keys are errors that name the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.screen != "auto" && parse_size(&config.screen).is_none() {
            return Err(format!(
                "screen = \"{}\" is neither \"auto\" nor WIDTHxHEIGHT like \"1280x800\"",
                config.screen
            ));
        }
        Ok(config)
    }
}

/// Parses `WxH`.
pub fn parse_size(text: &str) -> Option<(u16, u16)> {
    let (w, h) = text.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("agnet = \"tcp:1.2.3.4:1\"").unwrap_err();
        assert!(err.contains("agnet"), "{err}");
    }

    #[test]
    fn values_and_defaults() {
        let c =
            Config::parse("agent = \"vsock:2:6010\"\nscreen = \"800x600\"\nkeymap = \"default\"")
                .unwrap();
        assert_eq!(c.agent.to_string(), "vsock:2:6010");
        assert_eq!(parse_size(&c.screen), Some((800, 600)));
        assert_eq!(c.keymap, KeymapChoice::Default);
        assert_eq!(c.ready_timeout_s, 30);
        assert!(Config::parse("screen = \"big\"")
            .unwrap_err()
            .contains("WIDTHxHEIGHT"));
        assert!(Config::parse("agent = \"tcp:nohost\"")
            .unwrap_err()
            .contains("tcp:HOST:PORT"));
    }
}
