//! `tyr`, the command-line interface of Tyr (SPEC §11).

use std::process::ExitCode;

fn main() -> ExitCode {
    tyr_cli::main_entry()
}
