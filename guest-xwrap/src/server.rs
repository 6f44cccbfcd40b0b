//! X server mode: what a display manager runs. Preflight, proxy, nested server, readiness,
//! signals, exit — in that order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use xbridge_proto::{Key, Welcome};

use crate::args::{self, DmArgs, Flavor, Look};
use crate::child::{self, DisplayFdPipe};
use crate::config::{parse_size, Config, KeymapChoice};
use crate::proxy::ProxyDisplay;
use crate::readiness;

/// First display number tried for the proxy display, far from the usual :0…:10.
pub const PROXY_DISPLAY_BASE: u16 = 600;

/// Signals passed on to the nested server.
const FORWARDED: [SignalKind; 5] = [
    SignalKind::terminate(),
    SignalKind::interrupt(),
    SignalKind::quit(),
    SignalKind::hangup(),
    SignalKind::from_raw(libc::SIGCONT),
];

/// Finds the nested server binary: `auto` prefers Xephyr.
pub fn find_server(choice: &str) -> anyhow::Result<(PathBuf, Flavor)> {
    let flavor_of = |p: &Path| {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().to_lowercase().contains("xnest"))
        {
            Flavor::Xnest
        } else {
            Flavor::Xephyr
        }
    };
    let candidates: Vec<PathBuf> = match choice {
        "auto" => vec!["Xephyr".into(), "Xnest".into()],
        other => vec![other.into()],
    };
    for candidate in &candidates {
        if let Some(path) = which(candidate) {
            let flavor = flavor_of(&path);
            return Ok((path, flavor));
        }
    }
    bail!(
        "no nested X server found (server = \"{choice}\"); install one: `apt-get install xserver-xephyr` (or xnest)"
    )
}

fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn look(config: &Config, welcome: &Welcome, display_hint: Option<u16>) -> Look {
    let size = match config.screen.as_str() {
        "auto" => welcome
            .host
            .screen
            .map(|s| (fit(s.width), fit(s.height)))
            .or(Some((1024, 768))),
        fixed => parse_size(fixed),
    };
    let host = hostname();
    let title = config.title.clone().unwrap_or_else(|| match display_hint {
        Some(n) => format!("{host} :{n} (xbridge guest)"),
        None => format!("{host} (xbridge guest)"),
    });
    let keymap = match (config.keymap, &welcome.host.keymap) {
        (KeymapChoice::Host, Some(k)) if !k.layout.is_empty() => Some([
            k.rules.clone(),
            k.model.clone(),
            k.layout.clone(),
            k.variant.clone(),
            k.options.clone(),
        ]),
        _ => None,
    };
    Look {
        size,
        title,
        fullscreen: config.fullscreen,
        resizeable: config.resizeable,
        keymap,
    }
}

/// Nine tenths of the host, to leave room for panels and decorations; whole multiples of 8.
fn fit(host: u16) -> u16 {
    ((host as u32 * 9 / 10) as u16 / 8 * 8).max(320)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "guest".into())
}

/// Runs the nested server for a display manager. Returns only on failure before the child
/// ran; otherwise the process exits mirroring the child.
pub async fn run(
    config: Config,
    dm: DmArgs,
    parent_wants_usr1: bool,
) -> anyhow::Result<std::convert::Infallible> {
    child::die_with_parent();
    if let Some(fd) = dm.displayfd {
        readiness::set_cloexec(fd)
            .with_context(|| format!("-displayfd {fd} is not an open descriptor"))?;
    }
    for dropped in &dm.dropped {
        tracing::debug!("dropping `{dropped}`: nested servers reject it");
    }
    // Signal streams exist before the child does, so none of its signals is missed.
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut forwarded = FORWARDED.map(|kind| signal(kind).expect("signal handler"));

    let key = Key::load(&config.key_file)?;
    let (server, flavor) = find_server(&config.server)?;
    let welcome = crate::agent::wait_for_agent(
        &config.agent,
        &key,
        Duration::from_secs(config.agent_wait_s),
    )
    .await
    .with_context(|| format!("with key file {}", config.key_file.display()))?;

    let proxy = Arc::new(
        ProxyDisplay::bind(PROXY_DISPLAY_BASE).context("cannot create the proxy display")?,
    );
    tracing::info!(proxy = proxy.number, "proxy display ready");
    let serving = tokio::spawn(Arc::clone(&proxy).serve(config.agent.clone(), key));

    let pipe = DisplayFdPipe::new()?;
    let look = look(&config, &welcome, dm.display);
    let argv = args::nested_argv(
        flavor,
        dm.display,
        &dm,
        &look,
        child::raw(&pipe.write),
        &config.extra_args,
    );
    let proxy_display = PathBuf::from(format!(":{}", proxy.number));
    let xauthority = proxy.xauthority();
    tracing::info!("starting {} {}", server.display(), argv.join(" "));
    let started = Instant::now();
    let mut nested = child::spawn(
        &server,
        &argv,
        &[("DISPLAY", &proxy_display), ("XAUTHORITY", &xauthority)],
        child::raw(&pipe.write),
    )
    .with_context(|| format!("cannot start {}", server.display()))?;
    drop(pipe.write);
    let pid = nested
        .id()
        .ok_or_else(|| anyhow!("nested server vanished at once"))?;

    // Readiness: the child's display number and first SIGUSR1 arrive together; then probe.
    let mut displayfd = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe.read)?;
    let mut number_text = String::new();
    let mut number: Option<u16> = None;
    let mut child_signalled = false;
    let deadline = tokio::time::sleep(Duration::from_secs(config.ready_timeout_s));
    tokio::pin!(deadline);
    let mut poll_every = Duration::from_millis(5);
    let terminates_when_idle = dm.passthrough.iter().any(|a| a == "-terminate");
    let mut stop_requested = false;
    let started_up = loop {
        if let Some(n) = number {
            if terminates_when_idle {
                // A probe would be its last client and end it; -displayfd is its own word.
                break Start::Ready(n);
            }
            let cookie = readiness::client_cookie(dm.auth.as_deref(), n)
                .with_context(|| "cannot read the display manager's -auth file".to_string())?;
            let probed =
                tokio::task::spawn_blocking(move || readiness::probe(n, cookie.as_deref())).await?;
            match probed {
                Ok(()) => break Start::Ready(n),
                Err(e) => tracing::debug!("display :{n} not ready yet: {e}"),
            }
        }
        let mut chunk = [0u8; 16];
        tokio::select! {
            read = displayfd.read(&mut chunk), if number.is_none() => {
                let read = read?;
                if read == 0 {
                    // EOF without a number: the child is exiting; its status says why.
                    let status = nested.wait().await?;
                    if stop_requested {
                        break Start::Stopped(status);
                    }
                    bail!("{} exited before it was ready ({status}); its own messages above say why", server.display());
                }
                number_text.push_str(&String::from_utf8_lossy(&chunk[..read]));
                if let Some(line) = number_text.strip_suffix('\n') {
                    number = Some(line.trim().parse().with_context(|| format!("nested server wrote `{line}` to -displayfd"))?);
                }
            }
            _ = usr1.recv() => child_signalled = true,
            () = tokio::time::sleep(poll_every), if number.is_some() => poll_every = (poll_every * 2).min(Duration::from_millis(100)),
            status = nested.wait() => {
                let status = status?;
                if stop_requested {
                    break Start::Stopped(status);
                }
                bail!("{} exited before it was ready ({status}); its own messages above say why", server.display());
            }
            signo = next_forwarded(&mut forwarded) => {
                // A display manager giving up during start-up: the child's exit is then ours.
                stop_requested |= matches!(signo, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT);
                tracing::debug!("forwarding signal {signo} during start-up");
                child::send_signal(pid, signo);
            }
            () = &mut deadline => {
                child::send_signal(pid, libc::SIGTERM);
                let _ = nested.wait().await;
                bail!("the nested server did not accept connections within ready_timeout_s = {} s", config.ready_timeout_s);
            }
        }
    };
    let status = match started_up {
        Start::Stopped(status) => status,
        Start::Ready(number) => {
            tracing::info!(
                display = number,
                ms = started.elapsed().as_millis() as u64,
                "nested server accepts connections"
            );
            if !child_signalled {
                // The child sends SIGUSR1 right after writing -displayfd; absorb it so it is not
                // mistaken for a reset. Bounded: a server that never signals costs 200 ms once.
                child_signalled = tokio::time::timeout(Duration::from_millis(200), usr1.recv())
                    .await
                    .is_ok();
                tracing::debug!(child_signalled, "initial SIGUSR1 from the nested server");
            }
            if resets_when_idle(&dm) {
                // Our probe was the server's only client, so its departure started a reset; the
                // server is ready again when it says so. Announcing earlier would send the greeter
                // into the middle of that reset.
                match tokio::time::timeout(Duration::from_secs(config.ready_timeout_s), usr1.recv())
                    .await
                {
                    Ok(_) => tracing::debug!("nested server reset after the readiness probe"),
                    Err(_) => {
                        tracing::warn!(
                            "no reset signal after the readiness probe; announcing anyway"
                        )
                    }
                }
            }
            if parent_wants_usr1 {
                readiness::signal_parent();
            }
            if let Some(fd) = dm.displayfd {
                if let Err(e) = readiness::write_displayfd(fd, number) {
                    tracing::warn!("cannot write to the display manager's -displayfd {fd}: {e}");
                }
            }

            loop {
                tokio::select! {
                    status = nested.wait() => break status?,
                    _ = usr1.recv() => {
                        tracing::info!("nested server reset");
                        if parent_wants_usr1 { readiness::signal_parent(); }
                    }
                    signo = next_forwarded(&mut forwarded) => {
                        tracing::debug!("forwarding signal {signo}");
                        child::send_signal(pid, signo);
                    }
                }
            }
        }
    };
    tracing::info!("nested server ended: {status}");
    serving.abort();
    let _ = serving.await;
    // The last reference: removes the private Xauthority directory before we exit.
    drop(proxy);
    child::mirror_exit(status)
}

/// How start-up ended.
enum Start {
    /// The nested display accepts the display manager's clients.
    Ready(u16),
    /// The display manager stopped us first; this is how the nested server ended.
    Stopped(std::process::ExitStatus),
}

/// Whether the nested server resets when its last client leaves (X's default; display
/// managers pass `-noreset` to prevent it).
fn resets_when_idle(dm: &DmArgs) -> bool {
    !dm.passthrough
        .iter()
        .any(|a| a == "-noreset" || a == "-terminate")
}

/// The next signal to pass on to the nested server.
async fn next_forwarded(signals: &mut [tokio::signal::unix::Signal; 5]) -> i32 {
    let [term, int, quit, hup, cont] = signals;
    tokio::select! {
        _ = term.recv() => libc::SIGTERM,
        _ = int.recv() => libc::SIGINT,
        _ = quit.recv() => libc::SIGQUIT,
        _ = hup.recv() => libc::SIGHUP,
        _ = cont.recv() => libc::SIGCONT,
    }
}
