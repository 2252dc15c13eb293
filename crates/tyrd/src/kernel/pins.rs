//! Pinned maps left by another tyrd build. A map whose definition differs from this build's
//! (an upgrade that changed a layout) cannot be adopted: the programs would not load against
//! it, leaving the host at the observe tier. Such a pin is removed, so the map is created
//! afresh and its state (process identities, caches, tables) starts empty; the programs of
//! the old build keep their own maps until their links are replaced.

use std::path::Path;

use aya::maps::MapInfo;

use super::{KernelError, MAPS};

/// Removes (and logs) the pins under `dir` of maps whose type, key or value size, capacity
/// or flags differ from their definition in `object`.
pub(super) fn drop_incompatible(object: &[u8], dir: &Path) -> Result<(), KernelError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| KernelError::Parse(e.to_string()))?;
    for name in MAPS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let want = obj.maps.get(name).ok_or(KernelError::MissingMap(name))?;
        let want = (
            want.map_type(),
            want.key_size(),
            want.value_size(),
            want.max_entries(),
            want.map_flags(),
        );
        let have = MapInfo::from_pin(&path).ok().and_then(|i| {
            let kind = i.map_type().ok()? as u32;
            Some((
                kind,
                i.key_size(),
                i.value_size(),
                i.max_entries(),
                i.map_flags(),
            ))
        });
        if have == Some(want) {
            continue;
        }
        tracing::warn!(
            map = name,
            pinned = ?have,
            this_build = ?want,
            "a pinned map of another tyrd build has another layout (type, key, value, entries, flags): replaced, its state starts empty"
        );
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
