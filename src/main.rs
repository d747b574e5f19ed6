//! The `tablecast` command line.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tablecast::check::CheckArgs;
use tablecast::warm::{self, WarmArgs};
use tablecast::{App, Config, Listeners};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "Schema-defined tables served over REST, from one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every table defined in the schema directory.
    Serve(Box<Config>),
    /// Check that the schema files are valid and, with --data, that every stored record meets
    /// its table's schema; exits 1 if not (for CI and deploys).
    Check(CheckArgs),
    /// Fetch ids into a cache table of a running server ahead of use.
    Warm(WarmArgs),
    /// Print the argon2id hash of a password (asked at a terminal, or read from standard
    /// input), for a user in the access file.
    Passwd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(config) => runtime.block_on(serve(*config)),
        Command::Check(args) => match tablecast::check::run(&args) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(reason) => Err(reason.into()),
        },
        Command::Warm(args) => runtime.block_on(warm_cache(args)),
        Command::Passwd => tablecast::access::passwd::run()
            .map(|hash| println!("{hash}"))
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let app = App::open(config)?;
    let listeners = Listeners::bind(app.config()).await?;
    if let Some(mqtt) = &listeners.mqtt {
        println!("tablecast MQTT on mqtt://{}", mqtt.local_addr()?);
    }
    if let Some(mqtts) = &listeners.mqtts {
        println!("tablecast MQTT over TLS on mqtts://{}", mqtts.local_addr()?);
    }
    let scheme = if app.config().tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    // Printed last, once the tables are open, so a script may wait for this line.
    println!(
        "tablecast listening on {scheme}://{}",
        listeners.http.local_addr()?
    );
    app.serve(listeners, shutdown_signal()).await?;
    Ok(())
}

async fn warm_cache(args: WarmArgs) -> Result<(), Box<dyn std::error::Error>> {
    let totals = warm::run(&args).await?;
    println!(
        "warmed {}: {} fetched, {} already fresh, {} not found at the origin, {} failed",
        args.table,
        totals.fetched,
        totals.fresh,
        totals.not_found,
        totals.failed.len()
    );
    for failure in totals.failed.iter().take(20) {
        println!("  {failure}");
    }
    if totals.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ids could not be fetched", totals.failed.len()).into())
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}
