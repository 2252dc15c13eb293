//! Helpers shared by the kernel tests (host tracepoint tier and LSM guest).

use std::time::Duration;

use tyrd::kernel::events::{EventReader, KernelEvent};

/// The first ring-buffer event matching `pred` within 5 s; panics naming `what` otherwise.
pub fn first_event(
    rt: &tokio::runtime::Runtime,
    events: &mut EventReader,
    what: &str,
    pred: impl Fn(&KernelEvent) -> bool,
) -> KernelEvent {
    let found = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.next().await {
                    Ok(Ok(ev)) if pred(&ev) => return ev,
                    Ok(_) => {}
                    Err(e) => panic!("ring buffer: {e}"),
                }
            }
        })
        .await
    });
    found.unwrap_or_else(|_| panic!("no event within 5 s: {what}"))
}
