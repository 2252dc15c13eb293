//! The example configuration shipped in deploy/ is accepted by the daemon's strict loader.

use std::path::Path;

#[test]
fn deploy_example_tyrd_yaml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tyrd.yaml");
    let config = tyrd::config::Config::load(&path).expect("deploy/tyrd.yaml is valid");
    assert_eq!(config.server, "tyr.example.internal:7700");
    assert_eq!(config.heartbeat_interval_s, 30);
    assert_eq!(config.buffer_size_mb, 500);
    assert!(config.enrollment_token.is_some());
}
