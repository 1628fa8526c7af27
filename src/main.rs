//! The `mailguard` binary: CLI → Config → run. `anyhow` lives only here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::info;

use mailguard::config::Config;
use mailguard::telemetry::{self, Health, Metrics};
use mailguard::timers::SystemClock;

#[derive(Parser)]
#[command(
    name = "mailguard",
    version,
    about = "Blocks compromised mailboxes by their outbound spam and viruses"
)]
struct Cli {
    /// Configuration file (TOML). Environment variables MAILGUARD_<SECTION>__<FIELD> override it.
    #[arg(long, short, env = "MAILGUARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stream processor until SIGINT/SIGTERM.
    Run,
    /// Validate the configuration and print it as resolved (secrets shown as `[redacted]`).
    CheckConfig,
    /// Create the topics of the configuration that do not exist.
    Topics,
    /// Read JSON lines on stdin and produce them as Avro records.
    Produce(mailguard::cli::ProduceArgs),
    /// Print Avro records of a topic as JSON lines.
    Tail(mailguard::cli::TailArgs),
    /// What the live and candidate policies would have done over a history of verdicts
    /// (a file or the verdicts topic over a time range): JSON and HTML reports.
    Backtest(mailguard::backtest::BacktestArgs),
    /// Call the admin API (status, blocked, incident, unblock) or issue API tokens.
    Admin(mailguard::cli::AdminArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mailguard: invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    match real_main(cli.command, config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailguard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(command: Command, config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match command {
        Command::CheckConfig => {
            println!("{}", toml::to_string_pretty(&config.redacted())?);
            Ok(())
        }
        Command::Topics => rt.block_on(async {
            let created = mailguard::kafka::admin::ensure_topics(&config).await?;
            for t in created {
                println!("created {t}");
            }
            Ok(())
        }),
        Command::Produce(args) => {
            mailguard::cli::produce(&config, &args, &SystemClock).context("produce")
        }
        Command::Tail(args) => mailguard::cli::tail(&config, &args).context("tail"),
        Command::Backtest(args) => mailguard::backtest::backtest(&config, &args)
            .map(drop)
            .context("backtest"),
        Command::Admin(args) => mailguard::cli::admin(&args).context("admin"),
        Command::Run => rt.block_on(run(config)),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let health = Health::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let api = if config.api.enabled {
        // The view reads the pipeline's topics: create them first when the pipeline would.
        if config.topics.create_missing {
            mailguard::kafka::admin::ensure_topics(&config).await?;
        }
        let (cfg, m) = (config.clone(), metrics.clone());
        let api = tokio::task::spawn_blocking(move || {
            mailguard::api::Api::start(&cfg, m, Arc::new(SystemClock))
        })
        .await
        .expect("api start task")
        .context("api")?;
        info!(
            tokens = config.api.tokens.len(),
            "admin and query API under /v1"
        );
        Some(api)
    } else {
        None
    };
    let (addr, server) = mailguard::http::bind(
        &config.http.listen,
        metrics.clone(),
        health.clone(),
        api.as_ref(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    )
    .await
    .with_context(|| format!("http.listen {}", config.http.listen))?;
    info!(%addr, "serving /metrics /healthz /readyz");
    let server = tokio::spawn(server);
    let result = mailguard::pipeline::run(
        config,
        metrics,
        health,
        Arc::new(SystemClock),
        shutdown_signal(),
    )
    .await;
    // The HTTP server outlives the pipeline only until here, also when the pipeline failed.
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(api) = api {
        tokio::task::spawn_blocking(move || api.stop())
            .await
            .expect("api stop task");
    }
    result.context("pipeline")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("signal received");
}
