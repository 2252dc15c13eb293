//! `tyr`, the command-line interface of Tyr (SPEC §11): offline policy tools and a client of
//! the `tyr-server` REST API (SPEC §10).

/// `println!` that ignores a closed stdout (e.g. `| head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod client;
pub mod commands;
pub mod config;
pub mod duration;
mod offline;
pub mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use commands::{Ctx, agents, events, policies, run, session, tokens, users};

/// Command-line interface of Tyr, the governor of AI coding agents.
#[derive(Parser)]
#[command(name = "tyr", version, about)]
struct Cli {
    /// Server base URL, e.g. https://tyr.example:7701 (remembered in config.toml).
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// CA certificate (PEM) of the server, as served at /api/v1/ca.pem (remembered).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Log in and save the session token.
    Login(session::LoginArgs),
    /// Forget the saved session token.
    Logout,
    /// Host daemons.
    #[command(subcommand)]
    Agent(agents::AgentCommand),
    /// AI agents discovered on the hosts.
    #[command(subcommand)]
    Discovered(agents::DiscoveredCommand),
    /// Tokens with which daemons enroll.
    #[command(subcommand)]
    EnrollmentToken(tokens::TokenCommand),
    /// Work with policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(events::AuditCommand),
    /// Drift between the daemons' verdicts and the server's, per daemon and cause.
    Drift(events::DriftArgs),
    /// Console and CLI users.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Run a command as an AI agent of the given type (governed by the local tyrd).
    Run(run::RunArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file offline; prints each error as FILE:LINE:COLUMN: message.
    Validate(offline::ValidateArgs),
    /// Decide one request against policy files offline.
    Eval(offline::EvalArgs),
    #[command(flatten)]
    Online(policies::PolicyCommand),
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx::new(cli.output, cli.server, cli.ca);
    let result = match cli.command {
        Command::Policy(PolicyCommand::Validate(args)) => offline::validate(&args, cli.output),
        Command::Policy(PolicyCommand::Eval(args)) => offline::eval(&args, cli.output),
        Command::Policy(PolicyCommand::Online(c)) => policies::run(&ctx, c),
        Command::Login(args) => session::login(&ctx, &args),
        Command::Logout => session::logout(&ctx),
        Command::Agent(c) => agents::run_agent(&ctx, c),
        Command::Discovered(c) => agents::run_discovered(&ctx, c),
        Command::EnrollmentToken(c) => tokens::run(&ctx, c),
        Command::Audit(c) => events::run(&ctx, c),
        Command::Drift(args) => events::drift(&ctx, &args),
        Command::User(c) => users::run(&ctx, c),
        Command::Run(args) => run::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tyr: {e}");
            e.exit_code()
        }
    }
}

/// A failed command: one line for stderr and its exit code.
#[derive(Debug)]
pub enum CliError {
    /// The input policy is invalid (exit 1).
    Invalid(String),
    /// The command was used wrongly (exit 2).
    Usage(String),
    /// The server refused or could not be reached, or local state is broken (exit 1).
    Failed(String),
}

impl CliError {
    /// 1, or 2 for a usage error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Invalid(_) | CliError::Failed(_) => ExitCode::from(1),
            CliError::Usage(_) => ExitCode::from(2),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Invalid(m) | CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}
