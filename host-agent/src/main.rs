//! host-agent's entry point: parse, configure logging, run.

use std::process::ExitCode;

use clap::Parser;
use xbridge_host_agent::config::{self, Cli, Command};
use xbridge_host_agent::{stdio, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Init(args)) => {
            let path = args.key.unwrap_or_else(config::default_key_path);
            xbridge_host_agent::init(&path, args.force).map(|text| print!("{text}"))
        }
        Some(Command::Stdio(args)) => {
            // Before anything else: stderr may be the guest's socket.
            let _ = stdio::silence_stderr();
            let serve = config::ServeArgs {
                common: args.common,
                ..Default::default()
            };
            run(&serve, true, |s| Box::pin(xbridge_host_agent::stdio(s)))
        }
        Some(Command::Serve(serve)) => {
            run(&serve, false, |s| Box::pin(xbridge_host_agent::serve(s)))
        }
        None => run(&cli.serve, false, |s| {
            Box::pin(xbridge_host_agent::serve(s))
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let line = match &failure {
                Failure::Runtime(e) => xbridge_proto::report::chain(e.as_ref()),
                Failure::Config(text) => text.clone(),
            };
            tracing::error!("{line}");
            eprintln!("host-agent: {line}");
            ExitCode::from(failure.exit_code() as u8)
        }
    }
}

type Job = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>>>>;

fn run(
    serve: &config::ServeArgs,
    stdio_mode: bool,
    job: impl FnOnce(config::Settings) -> Job,
) -> Result<(), Failure> {
    let settings = config::resolve(serve).map_err(|e| Failure::Config(e.0))?;
    let _log_guard = logging(settings.verbose, settings.log_file.as_deref(), stdio_mode);
    if let Some(path) = &settings.xauthority {
        // x11rb reads XAUTHORITY; set it before any thread exists.
        std::env::set_var("XAUTHORITY", path);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime.block_on(job(settings))
}

/// Logs go to `--log-file`, else stderr — except in stdio mode, where stderr is forbidden.
fn logging(verbose: u8, log_file: Option<&std::path::Path>, stdio_mode: bool) -> Option<()> {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None if stdio_mode => {}
        None => builder.with_writer(std::io::stderr).init(),
    }
    Some(())
}
