//! `tyr-server`, the Tyr control plane. Not built yet: the server issue fills it.

fn main() {
    eprintln!("tyr-server: the control plane is not implemented yet");
    std::process::exit(2);
}
