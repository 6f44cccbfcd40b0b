//! The command line. In X server mode the arguments are whatever a display manager passes an
//! X server (`:0 -auth F -nolisten tcp vt7`, `-verbose 3`, …), which no option parser can be
//! trusted to leave alone, so only our own leading options are taken and the rest passes
//! through. Subcommands and `--help` go through clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "guest-xwrap",
    version,
    about = "The X server a guest's display manager runs: a nested Xephyr/Xnest shown on the host's desktop",
    long_about = "Configure your display manager to run guest-xwrap as its X server. It reaches the host \
through host-agent, starts Xephyr (or Xnest) nested into the host display, waits until the nested \
display really accepts connections, then tells the display manager (SIGUSR1, -displayfd).\n\n\
X server mode:\n  guest-xwrap [--config PATH] [-v|-vv] [X SERVER ARGUMENTS…]\n  \
e.g. guest-xwrap :0 -auth /var/lib/xdm/authdir/authfiles/A:0 -nolisten tcp vt7\n\n\
Settings come from --config, else $XBRIDGE_XWRAP_CONFIG, else /etc/xbridge/xwrap.toml.\n\
When something does not work, run `guest-xwrap check`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Walk the chain step by step (config, key, agent, handshake, host display, nested server)
    Check {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Make a display manager run guest-xwrap as its X server (reversible with `uninstall`)
    Install {
        #[arg(long, value_enum)]
        dm: crate::install::Dm,
        /// Print the exact files and lines, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Undo `install` for a display manager, restoring every file as it was
    Uninstall {
        #[arg(long, value_enum)]
        dm: crate::install::Dm,
    },
    /// Only the proxy display: run one guest X program on the host, or debug
    Proxy {
        /// Display number to serve, e.g. :50
        #[arg(long, value_name = ":M")]
        display: String,
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
}

/// X server mode's own options, taken from the front of argv.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerMode {
    pub config: Option<PathBuf>,
    pub verbose: u8,
    pub x_args: Vec<String>,
}

/// Either X server mode or a clap-parsed subcommand.
#[derive(Debug)]
pub enum Invocation {
    Server(ServerMode),
    Command(Cli),
}

/// Decides the mode. Anything that is not ours ends our options and starts the X arguments.
pub fn parse(argv: Vec<String>) -> Invocation {
    let first = argv.get(1).map(String::as_str);
    if matches!(
        first,
        Some(
            "check"
                | "proxy"
                | "install"
                | "uninstall"
                | "help"
                | "-h"
                | "--help"
                | "-V"
                | "--version"
        )
    ) {
        return Invocation::Command(Cli::parse_from(argv));
    }
    let mut mode = ServerMode::default();
    let mut it = argv.into_iter().skip(1).peekable();
    while let Some(arg) = it.peek() {
        match arg.as_str() {
            "--config" => {
                it.next();
                mode.config = it.next().map(PathBuf::from);
            }
            a if a.starts_with("--config=") => {
                mode.config = Some(PathBuf::from(&a["--config=".len()..]));
                it.next();
            }
            "--verbose" => {
                mode.verbose += 1;
                it.next();
            }
            a if a.len() >= 2 && a.starts_with('-') && a[1..].bytes().all(|b| b == b'v') => {
                mode.verbose += (a.len() - 1) as u8;
                it.next();
            }
            _ => break,
        }
    }
    mode.x_args = it.collect();
    Invocation::Server(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(s: &str) -> ServerMode {
        let argv = std::iter::once("guest-xwrap")
            .chain(s.split_whitespace())
            .map(String::from)
            .collect();
        match parse(argv) {
            Invocation::Server(m) => m,
            Invocation::Command(c) => panic!("{c:?}"),
        }
    }

    #[test]
    fn own_options_only_at_the_front() {
        let m = server("--config /c.toml -vv :0 -auth /a -verbose 3 -v");
        assert_eq!(m.config, Some(PathBuf::from("/c.toml")));
        assert_eq!(m.verbose, 2);
        assert_eq!(m.x_args, [":0", "-auth", "/a", "-verbose", "3", "-v"]);
        // GDM 43's first argument is `vtN`, SDDM's `-nolisten`: all theirs.
        assert_eq!(server("-nolisten tcp").x_args, ["-nolisten", "tcp"]);
        assert_eq!(server("-verbose 3").verbose, 0);
    }
}
