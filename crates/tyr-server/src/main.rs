//! `tyr-server`, the Tyr control plane. Configuration from the environment (SPEC §3) and an
//! optional `--config FILE.toml`; logs to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tyr_server::config::Config;

/// Tyr control plane: REST API, web console, agent plane.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML file with the environment keys in lower case (the environment overrides it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tyr-server: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.rust_log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tyr_server::app::install_crypto_provider();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tyr-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tyr_server::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tyr-server: {e}");
            ExitCode::FAILURE
        }
    }
}
