//! guest-xwrap: the X server a display manager runs in the guest, nesting it into the host
//! display through the host agent.
//!
//! # Layout
//! - [`cli`]: the command line — X server arguments as display managers pass them, or a subcommand.
//! - [`config`]: the `xwrap.toml` settings.
//! - [`args`]: display-manager argv → nested-server argv (pure).
//! - [`agent`]: connecting and authenticating to the host agent.
//! - [`proxy`]: the cookie-guarded proxy display the nested server talks to.
//! - [`child`]: spawning the nested server and mirroring its exit.
//! - [`readiness`]: probing the nested display and telling the display manager.
//! - [`server`]: X server mode, tying the above together.
//! - [`check`]: the step-by-step diagnosis.
//! - [`install`]: display-manager integration, reversibly.

pub mod access;
pub mod agent;
pub mod args;
pub mod check;
pub mod child;
pub mod cli;
pub mod config;
pub mod install;
pub mod proxy;
pub mod readiness;
pub mod server;
