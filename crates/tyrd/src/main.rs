//! `tyrd`, the Tyr host daemon: reads `/etc/tyr/tyrd.yaml`, enforces the pushed policy in the
//! kernel, runs the event pipeline into the on-disk spool, reports spool state. Logs go to
//! stderr.

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use tyrd::agent_plane::link::{SpoolRequest, SpoolServer};
use tyrd::config::{self, Config};
use tyrd::enforce::Enforcer;
use tyrd::event::Event;
use tyrd::kernel::events::{EventError, EventReader, KernelEvent};
use tyrd::pipeline::aggregate::{Aggregator, DEFAULT_MAX_KEYS, DEFAULT_WINDOW};
use tyrd::pipeline::source::{JsonLines, LineError};
use tyrd::pipeline::spool::{self, Spool, SpoolOptions};
use tyrd::pipeline::{Counts, Pipeline};

/// Tyr host daemon.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Daemon configuration file.
    #[arg(long, global = true, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// Read events from a file of JSON lines instead of the kernel.
        #[arg(long, value_name = "FILE")]
        events_from: Option<PathBuf>,
    },
    /// Enroll with the server using `enrollment_token`.
    Enroll,
    /// Print the state of the event spool.
    Status,
    /// Probe the kernel and print the enforcement tier.
    Probe {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How often the pipeline releases aggregated events and spools partial batches.
const TICK: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Probe { json } = cli.command {
        return probe(json);
    }
    let name = match cli.command {
        Command::Probe { .. } => "probe",
        Command::Run { .. } | Command::Status | Command::Enroll => "",
    };
    if !name.is_empty() {
        eprintln!("tyrd {name}: not implemented yet");
        return ExitCode::from(2);
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tyrd: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Status => status(&config),
        Command::Run { events_from } => run(&config, &cli.config, events_from.as_deref()),
        Command::Enroll => enroll(&config, &cli.config),
        Command::Probe { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tyrd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tyrd status`: the spool, read without taking it from a running daemon.
fn status(config: &Config) -> Result<(), String> {
    let dir = config.spool_dir();
    let s = spool::inspect(&dir).map_err(|e| e.to_string())?;
    println!("spool:     {}", dir.display());
    println!("last_seq:  {}", s.last_seq);
    println!("acked_seq: {}", s.acked_seq);
    println!("pending:   {}", s.pending);
    println!("bytes:     {}", s.bytes);
    println!("segments:  {}", s.segments);
    Ok(())
}

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => tracing_subscriber::EnvFilter::try_new(&env)
            .map_err(|e| format!("RUST_LOG={env:?}: {e}"))?,
        _ => tracing_subscriber::EnvFilter::try_new(&config.log_level)
            .map_err(|e| format!("log_level {:?}: {e}", config.log_level))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// `tyrd run`.
fn run(config: &Config, config_path: &Path, events_from: Option<&Path>) -> Result<(), String> {
    init_logging(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run_async(config, config_path, events_from))
}

/// What the reader thread hands the pipeline.
type SourceItem = std::io::Result<Result<Event, LineError>>;

async fn run_async(
    config: &Config,
    config_path: &Path,
    events_from: Option<&Path>,
) -> Result<(), String> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let dir = config.spool_dir();
    let mut spool = tokio::task::block_in_place(|| {
        Spool::open(&dir, SpoolOptions::with_capacity(config.buffer_bytes()))
    })
    .map_err(|e| format!("spool: {e}"))?;
    let stats = spool.stats();
    tracing::info!(
        spool = %dir.display(),
        last_seq = stats.last_seq,
        acked_seq = stats.acked_seq,
        pending = stats.pending,
        "tyrd started"
    );

    let mut source = events_from.map(start_reader).transpose()?;
    let (enforcer, mut kernel) = Enforcer::start(config, events_from.is_none())?;
    let report = enforcer.report();
    tracing::info!(tier = ?report.tier(), reason = %report.downgrade_reason, "enforcement");
    let enforcer = Arc::new(Mutex::new(enforcer));
    let mut plane = tyrd::stream::start(config, config_path, stats.last_seq, enforcer.clone())
        .await
        .map_err(|e| format!("agent plane: {e}"))?;
    let mut pipeline = Pipeline::new(
        &mut spool,
        Aggregator::new(DEFAULT_WINDOW, DEFAULT_MAX_KEYS),
        config.events.allow,
        config.buffer_bytes(),
    );
    let mut ticker = tokio::time::interval(TICK);
    let file = events_from
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let signal = loop {
        tokio::select! {
            item = recv(&mut source), if source.is_some() => match item {
                Some(Ok(Ok(event))) => pipeline.ingest(event, Instant::now()).map_err(|e| format!("spool: {e}"))?,
                Some(Ok(Err(bad))) => {
                    tracing::error!("{file}:{bad}");
                    pipeline.reject();
                }
                Some(Err(e)) => return Err(format!("{file}: {e}")),
                None => {
                    source = None;
                    let counts = pipeline.finish().map_err(|e| format!("spool: {e}"))?;
                    log_counts("event source finished", counts);
                }
            },
            record = next_kernel_event(&mut kernel) => match record {
                Ok(Ok(k)) => {
                    let event = lock(&enforcer).to_event(&k);
                    if let Some(event) = event {
                        pipeline.ingest(event, Instant::now()).map_err(|e| format!("spool: {e}"))?;
                    }
                }
                Ok(Err(bad)) => {
                    tracing::error!("{bad}");
                    pipeline.reject();
                }
                Err(e) => return Err(format!("kernel ring buffer: {e}")),
            },
            _ = ticker.tick() => {
                let (drops, allow, swept) = {
                    let mut e = lock(&enforcer);
                    (e.ring_drops(), e.events_allow(), e.swept_allows())
                };
                for event in swept {
                    pipeline.ingest(event, Instant::now()).map_err(|e| format!("spool: {e}"))?;
                }
                pipeline.set_allow(allow);
                pipeline.tick(Instant::now()).map_err(|e| format!("spool: {e}"))?;
                if drops > 0 {
                    tracing::warn!(drops, "kernel ring buffer overflowed");
                    pipeline.spool_mut().record_ring_drops(drops).map_err(|e| format!("spool: {e}"))?;
                }
            }
            request = next_spool_request(&mut plane) => {
                if let Some(p) = &plane {
                    p.serve(request, pipeline.spool_mut());
                }
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
        if let Some(p) = &plane {
            p.publish(pipeline.spool_mut().stats().last_seq);
        }
    };
    let counts = pipeline.finish().map_err(|e| format!("spool: {e}"))?;
    lock(&enforcer).shutdown();
    tracing::info!(signal, "tyrd stopped");
    log_counts("pipeline totals", counts);
    Ok(())
}

fn log_counts(what: &str, c: Counts) {
    tracing::info!(
        received = c.received,
        rejected = c.rejected,
        filtered = c.filtered,
        merged = c.merged,
        spooled = c.spooled,
        last_seq = c.last_seq,
        "{what}"
    );
}

/// The enforcer, even if a panic poisoned its lock.
fn lock(enforcer: &Mutex<Enforcer>) -> std::sync::MutexGuard<'_, Enforcer> {
    enforcer.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next kernel record; pending forever without the kernel side.
async fn next_kernel_event(
    reader: &mut Option<EventReader>,
) -> std::io::Result<Result<KernelEvent, EventError>> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// The stream task's next spool request; pending forever without an agent plane.
async fn next_spool_request(plane: &mut Option<SpoolServer>) -> SpoolRequest {
    match plane {
        Some(p) => p.next().await,
        None => std::future::pending().await,
    }
}

/// `tyrd enroll`.
fn enroll(config: &Config, config_path: &Path) -> Result<(), String> {
    init_logging(config)?;
    tyrd::agent_plane::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let identity = runtime
        .block_on(tyrd::enroll::enroll(config, config_path))
        .map_err(|e| format!("enrollment failed: {e}"))?;
    println!("enrolled as {}", identity.agent_id);
    Ok(())
}

async fn recv(source: &mut Option<mpsc::Receiver<SourceItem>>) -> Option<SourceItem> {
    match source {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Reads `path` on a thread of its own; the channel closes at the end of the file.
fn start_reader(path: &Path) -> Result<mpsc::Receiver<SourceItem>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut lines = JsonLines::new(BufReader::new(file));
        loop {
            let item = match lines.next_event() {
                Ok(Some(item)) => Ok(item),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let fatal = item.is_err();
            if tx.blocking_send(item).is_err() || fatal {
                return;
            }
        }
    });
    Ok(rx)
}

/// `tyrd probe`: the enforcement tier of this kernel, per hook, with the reasons.
fn probe(json: bool) -> ExitCode {
    let report = tyrd::kernel::probe::probe();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tyrd probe: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.human());
    }
    ExitCode::SUCCESS
}
