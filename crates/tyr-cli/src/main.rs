//! `tyr`, the command-line interface.

fn main() {}
