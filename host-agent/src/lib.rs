//! host-agent: lets authenticated guests reach the host X display without its credentials.
//!
//! # Layout
//! - [`config`]: command line and `agent.toml`, merged into [`config::Settings`].
//! - [`listener`]: TCP, unix, vsock and systemd-activated sockets.
//! - [`server`]: the accept loop, connection cap and graceful stop.
//! - [`session`]: one guest: handshake, credential swap, byte pump.
//! - [`display`]: connecting to the host display; trusted cookies and untrusted authorizations.
//! - [`security`]: the SECURITY extension requests x11rb does not bind.
//! - [`stdio`]: one guest on stdin/stdout.
//! - [`vsock`]: AF_VSOCK listening.
//! - [`systemd`]: readiness notification.

pub mod config;
pub mod display;
pub mod listener;
pub mod security;
pub mod server;
pub mod session;
pub mod stdio;
pub mod systemd;
pub mod vsock;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use xbridge_proto::Key;

use crate::config::Settings;
use crate::display::HostDisplay;
use crate::listener::Listener;
use crate::session::Context;

/// How a command failed: configuration problems exit 2, everything else 1.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

fn context(settings: &Settings) -> Result<Arc<Context>, Failure> {
    let key = Key::load(&settings.key).map_err(|e| Failure::Config(e.to_string()))?;
    let display = HostDisplay::new(settings.display.clone(), settings.trust)
        .map_err(|e| Failure::Config(e.to_string()))?;
    Ok(Arc::new(Context {
        key,
        display: Arc::new(display),
        handshake_deadline: settings.handshake_timeout,
    }))
}

/// `host-agent serve`: bind, tell systemd, serve until SIGTERM/SIGINT, then drain.
pub async fn serve(settings: Settings) -> Result<(), Failure> {
    let ctx = context(&settings)?;
    let mut listeners = Listener::from_systemd().map_err(|e| Failure::Config(e.to_string()))?;
    let activated = !listeners.is_empty();
    if !activated {
        for endpoint in &settings.listen {
            listeners.push(
                Listener::bind(endpoint, settings.allow_remote)
                    .await
                    .map_err(|e| Failure::Config(e.to_string()))?,
            );
        }
    }
    let display = Arc::clone(&ctx.display);
    match tokio::task::spawn_blocking(move || display.preflight())
        .await
        .expect("preflight does not panic")
    {
        Ok(()) => {
            tracing::info!(display = ctx.display.name(), trust = ?settings.trust, "host display answers")
        }
        // Not fatal: the display may come later (agent started before the X session).
        Err(e) => tracing::warn!("{e}"),
    }
    systemd::notify_ready();
    let limits = server::Limits {
        max_connections: settings.max_connections,
        grace: settings.grace,
    };
    server::run(listeners, ctx, limits, stop_signal()).await;
    Ok(())
}

/// `host-agent stdio`: one guest on stdin/stdout.
pub async fn stdio(settings: Settings) -> Result<(), Failure> {
    let ctx = context(&settings)?;
    let stream = stdio::stdio_stream().context("cannot use stdin/stdout")?;
    let transferred = session::serve(ctx, stream)
        .await
        .context("guest session failed")?;
    tracing::info!(
        to_host = transferred.to_host,
        to_guest = transferred.to_guest,
        "guest disconnected"
    );
    Ok(())
}

/// `host-agent init`: create the key and explain where the guest finds it.
pub fn init(key_path: &Path, force: bool) -> Result<String, Failure> {
    Key::create(key_path, force).map_err(|e| Failure::Config(e.to_string()))?;
    let dir = key_path.parent().unwrap_or(Path::new("."));
    let key = key_path.display();
    let name = key_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lines = [
        format!("Created pairing key {key} (mode 0600)."),
        String::new(),
        "The guest needs this key at the path its xwrap.toml names as key_file".into(),
        "(default /etc/xbridge/guest.key, readable by root only):".into(),
        String::new(),
        "  UML: share just the key's directory with the guest:".into(),
        format!("    linux.uml ... hostfs={}", dir.display()),
        "  and in the guest:".into(),
        format!("    mount -t hostfs none /mnt/xbridge-key -o {} && install -m 600 /mnt/xbridge-key/{name} /etc/xbridge/guest.key", dir.display()),
        String::new(),
        "  QEMU: pass it through firmware config:".into(),
        format!("    qemu-system-x86_64 ... -fw_cfg name=opt/xbridge/key,file={key}"),
        "  and in the guest (or set key_file to the raw path):".into(),
        "    install -m 600 /sys/firmware/qemu_fw_cfg/by_name/opt/xbridge/key/raw /etc/xbridge/guest.key".into(),
        String::new(),
        format!("Then start the agent in your desktop session: `host-agent` (listens on {}; a slirp guest", config::DEFAULT_LISTEN),
        "reaches it as tcp:10.0.2.2:6010). To have it start with every desktop session:".into(),
        "    systemctl --user import-environment DISPLAY XAUTHORITY".into(),
        "    systemctl --user enable --now xbridge-host-agent.socket".into(),
        "  or, without a systemd user manager:".into(),
        "    cp /usr/share/xbridge/xbridge-host-agent.desktop ~/.config/autostart/".into(),
    ];
    Ok(lines.join("\n") + "\n")
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
