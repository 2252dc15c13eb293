//! `tyrd`, the Tyr host daemon. Not built yet: the agent-plane and kernel issues fill it.

fn main() {
    eprintln!("tyrd: the host daemon is not implemented yet");
    std::process::exit(2);
}
