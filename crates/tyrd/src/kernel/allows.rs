//! Allow events suppressed in-kernel (`tyr_allows`, see `bpf/tyr_maps.h`): an agent's
//! repeated allow of the same (process, path, action), or of a connect to the same
//! destination, is reported once per window; the
//! allows suppressed in a window travel with the next event of that key, and [`AllowSweep`]
//! reports the windows that ended with allows still pending, so none is lost silently.
//!
//! Limits: a window entry the kernel's LRU evicts (more than 65,536 windows in use) loses
//! its pending count; a window whose event never reached tyrd (ring buffer full) is given up
//! after [`LOST_AFTER_NS`] and counted in [`AllowSweep::lost`]; an allow decided in the
//! microseconds between the sweep reading an ended window and removing it is counted twice.

use std::collections::{HashMap, HashSet};

use aya::maps::{HashMap as BpfHashMap, MapError, Queue};

use super::events::KernelEvent;
use super::maps::{TyrAkey, TyrAval};
use super::{KernelError, Tracepoints, map_err};

/// How long a window suppresses repeats after its event (`TYR_ALLOW_WINDOW_NS`).
pub const WINDOW_NS: u64 = 1_000_000_000;
/// How long the sweep waits for a window's event (still unread in the ring buffer) before it
/// gives the window's count up as lost.
pub const LOST_AFTER_NS: u64 = 10 * WINDOW_NS;

/// The events that opened windows, and the windows with suppressed allows.
#[derive(Debug, Default)]
pub struct AllowSweep {
    /// Window events by (tgid, `boot_ns`): the window's `last_ns` is its event's timestamp.
    events: HashMap<(u32, u64), KernelEvent>,
    watched: HashSet<TyrAkey>,
    /// Suppressed allows that could not be reported (their window's event was never read).
    pub lost: u64,
}

impl AllowSweep {
    /// Notes an event read from the ring buffer (window events are kept for the sweep).
    pub fn note(&mut self, ev: &KernelEvent) {
        if ev.window {
            self.events.insert((ev.tgid, ev.boot_ns), ev.clone());
        }
    }

    /// At boot-clock time `now_ns`: one aggregated event (the window's event, `count` = the
    /// allows suppressed) per window that ended with allows pending. Each is removed from
    /// the kernel map, so the next allow of its key is reported afresh.
    pub fn sweep(
        &mut self,
        tp: &mut Tracepoints,
        now_ns: u64,
    ) -> Result<Vec<KernelEvent>, KernelError> {
        let name = "tyr_allow_queue";
        let mut queue: Queue<_, TyrAkey> =
            Queue::try_from(tp.map_mut(name)?).map_err(map_err(name))?;
        while let Ok(key) = queue.pop(0) {
            self.watched.insert(key);
        }
        let name = "tyr_allows";
        let mut allows: BpfHashMap<_, TyrAkey, TyrAval> =
            BpfHashMap::try_from(tp.map_mut(name)?).map_err(map_err(name))?;
        let mut out = Vec::new();
        let mut done = Vec::new();
        for key in &self.watched {
            let window = match allows.get(key, 0) {
                Ok(w) => w,
                // Reported by the kernel's next event and replaced, or evicted.
                Err(MapError::KeyNotFound) => {
                    done.push(*key);
                    continue;
                }
                Err(e) => return Err(map_err(name)(e)),
            };
            let age = now_ns.saturating_sub(window.last_ns);
            if window.pending == 0 {
                done.push(*key);
                continue;
            }
            if age < WINDOW_NS {
                continue;
            }
            match self.events.get(&(key.tgid, window.last_ns)) {
                Some(ev) => out.push(KernelEvent {
                    count: u32::try_from(window.pending).unwrap_or(u32::MAX),
                    window: false,
                    ..ev.clone()
                }),
                None if age < LOST_AFTER_NS => continue,
                None => self.lost = self.lost.saturating_add(window.pending),
            }
            match allows.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
            done.push(*key);
        }
        for key in done {
            self.watched.remove(&key);
        }
        self.events
            .retain(|_, ev| now_ns.saturating_sub(ev.boot_ns) < LOST_AFTER_NS);
        Ok(out)
    }
}
