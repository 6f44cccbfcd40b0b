//! guest-xwrap's entry point: record SIGUSR1's disposition, parse, configure logging, run.

use std::process::ExitCode;
use std::sync::Arc;

use xbridge_guest_xwrap::cli::{self, Command, Invocation};
use xbridge_guest_xwrap::config::Config;
use xbridge_guest_xwrap::{args, check, install, proxy, readiness, server};

fn main() -> ExitCode {
    // First of all: a parent asks to be signalled by starting us with SIGUSR1 ignored.
    let parent_wants_usr1 = readiness::parent_wants_sigusr1();
    match cli::parse(std::env::args().collect()) {
        Invocation::Server(mode) => x_server(mode, parent_wants_usr1),
        Invocation::Command(cli) => match cli.command {
            Command::Check { config } => {
                if runtime().block_on(check::run(config.as_deref())) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Command::Proxy {
                display,
                config,
                verbose,
            } => proxy_only(&display, config, verbose),
            Command::Install { dm, dry_run } => {
                let wrapper =
                    std::env::current_exe().unwrap_or_else(|_| "/usr/bin/guest-xwrap".into());
                let plan = install::plan(dm, &wrapper);
                print!("{}", plan.describe());
                if dry_run {
                    return ExitCode::SUCCESS;
                }
                match install::install(dm, &plan) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(xbridge_proto::report::chain(e.as_ref())),
                }
            }
            Command::Uninstall { dm } => match install::uninstall(dm) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(xbridge_proto::report::chain(e.as_ref())),
            },
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("guest-xwrap: {message}");
    ExitCode::FAILURE
}

fn x_server(mode: cli::ServerMode, parent_wants_usr1: bool) -> ExitCode {
    let (config, config_path) = match Config::load(mode.config.as_deref()) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    let dm = match args::translate(&mode.x_args) {
        Ok(dm) => dm,
        Err(e) => {
            return fail(format!(
                "cannot understand the X server arguments {:?}: {e}",
                mode.x_args
            ))
        }
    };
    let log_file = config.log_file.clone().unwrap_or_else(|| {
        let which = dm
            .display
            .map(|n| n.to_string())
            .unwrap_or_else(|| "auto".into());
        format!("/var/log/xbridge/xwrap-{which}.log").into()
    });
    logging(mode.verbose, Some(&log_file));
    tracing::info!(config = %config_path.display(), args = ?mode.x_args, parent_wants_usr1, "guest-xwrap starting");
    if let Some(auth) = &dm.auth {
        // Readiness probes present the display manager's own cookie.
        tracing::debug!(auth = %auth.display(), "display manager's -auth file");
    }
    match runtime().block_on(server::run(config, dm, parent_wants_usr1)) {
        Ok(never) => match never {},
        Err(e) => fail(xbridge_proto::report::chain(e.as_ref())),
    }
}

fn proxy_only(display: &str, config: Option<std::path::PathBuf>, verbose: u8) -> ExitCode {
    logging(verbose, None);
    let number: u16 = match display.trim_start_matches(':').parse() {
        Ok(n) => n,
        Err(_) => return fail(format!("--display `{display}` is not a display like :50")),
    };
    let (config, _) = match Config::load(config.as_deref()) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    let key = match xbridge_proto::Key::load(&config.key_file) {
        Ok(key) => key,
        Err(e) => return fail(e),
    };
    runtime().block_on(async move {
        let proxy = match proxy::ProxyDisplay::bind_exact(number) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                return fail(format!(
                    "cannot serve display :{number}: {e} — is that display in use?"
                ))
            }
        };
        println!("DISPLAY=:{number}");
        println!("XAUTHORITY={}", proxy.xauthority().display());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let serving = tokio::spawn(Arc::clone(&proxy).serve(config.agent.clone(), key));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        serving.abort();
        let _ = serving.await;
        ExitCode::SUCCESS
    })
}

/// Logs to the file when it can be opened, else stderr.
fn logging(verbose: u8, file: Option<&std::path::Path>) {
    use tracing_subscriber::EnvFilter;
    let level = ["info", "debug", "trace"][verbose.min(2) as usize];
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let opened = file.and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    match opened {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}
