//! `guest-xwrap check`: walks the chain one link at a time and says how to fix the first
//! broken one.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xbridge_proto::setup::{ByteOrder, SetupRequest};
use xbridge_proto::Key;

use crate::access::{self, Account};
use crate::agent;
use crate::config::Config;
use crate::server::find_server;

/// One line of the report.
fn line(ok: bool, step: &str, detail: &str) -> bool {
    println!("{} {step}: {detail}", if ok { "ok  " } else { "FAIL" });
    ok
}

/// Runs every step; returns whether all passed.
pub async fn run(explicit_config: Option<&Path>) -> bool {
    let (config, path) = match Config::load(explicit_config) {
        Ok(found) => found,
        Err(e) => {
            return line(
                false,
                "config",
                &format!("{e} — fix the file, see xwrap.toml(5) or /usr/share/doc/xbridge-guest"),
            )
        }
    };
    line(
        true,
        "config",
        &format!("{} (agent = {})", path.display(), config.agent),
    );
    let mut all = true;
    let key = match Key::load(&config.key_file) {
        Ok(key) => {
            line(true, "key file", &config.key_file.display().to_string());
            Some(key)
        }
        Err(e) => {
            let who = if is_root() {
                ""
            } else {
                " (note: check runs as a non-root user; the display manager's X server user must be able to read key_file)"
            };
            all = line(false, "key file", &format!("{e}{who}"));
            None
        }
    };
    if let Some(account) = is_root().then(access::gdm_x_server_account).flatten() {
        all &= dm_account_reads_key(&account, &config.key_file);
    }
    if let Some(key) = key {
        match agent::connect(&config.agent).await {
            Err(e) => {
                all = line(false, "agent reachable", &format!("cannot reach host agent at {}: {e} — start host-agent on the host; from a slirp guest the host's 127.0.0.1:6010 is tcp:10.0.2.2:6010", config.agent));
            }
            Ok(_) => {
                line(true, "agent reachable", &config.agent.to_string());
                match agent::open(&config.agent, &key).await {
                    Err(e) => all = line(false, "handshake", &e.to_string()),
                    Ok((stream, welcome, leftover)) => {
                        let screen = welcome
                            .host
                            .screen
                            .map(|s| format!("{}x{}", s.width, s.height))
                            .unwrap_or_else(|| "unknown".into());
                        line(
                            true,
                            "handshake",
                            &format!("{} (host screen {screen})", welcome.agent),
                        );
                        all &= host_display_answers(stream, leftover).await;
                    }
                }
            }
        }
    }
    match find_server(&config.server) {
        Ok((path, flavor)) => {
            line(
                true,
                "nested server",
                &format!("{} ({flavor:?})", path.display()),
            );
        }
        Err(e) => all = line(false, "nested server", &e.to_string()),
    }
    all
}

/// Sends a bare X11 setup request through the agent and reads the status byte.
async fn host_display_answers(
    mut stream: xbridge_proto::stream::BoxStream,
    mut reply: Vec<u8>,
) -> bool {
    let request = SetupRequest {
        byte_order: ByteOrder::native(),
        major: 11,
        minor: 0,
        auth_name: Vec::new(),
        auth_data: Vec::new(),
    };
    if stream.write_all(&request.encode()).await.is_err() {
        return line(
            false,
            "host display",
            "the agent closed the connection after the handshake — see the agent's log",
        );
    }
    while reply.len() < 8 {
        let mut chunk = [0u8; 256];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return line(false, "host display", "no X11 answer through the agent — is the host's X session running (DISPLAY of host-agent)?"),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
        }
    }
    match reply[0] {
        1 => line(true, "host display", "accepts our connection through the agent"),
        status => line(false, "host display", &format!("refused the agent's credential (status {status}) — check host-agent's --trust and --xauthority")),
    }
}

/// GDM runs the login screen's X server, and so us, as its own account: it must read the key.
fn dm_account_reads_key(account: &Account, key_file: &Path) -> bool {
    let step = "display manager's user";
    match access::can_read(account, key_file) {
        Ok(true) => line(
            true,
            step,
            &format!("{} can read {}", account.name, key_file.display()),
        ),
        Ok(false) => line(
            false,
            step,
            &format!(
                "GDM runs the X server as {user}, who cannot read {key} — run `chown {user} {key}` \
                 and make its directories searchable (chmod o+x), or set key_file to a copy {user} owns",
                user = account.name,
                key = key_file.display()
            ),
        ),
        Err(e) => line(false, step, &format!("cannot test as {}: {e}", account.name)),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
