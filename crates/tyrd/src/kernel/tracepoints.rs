//! [`Tracepoints`]: loading, attaching, pinning, tables, identities, counters, events.

use std::path::Path;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::cgroup_sock_addr::CgroupSockAddrLinkId;
use aya::programs::links::{CgroupAttachMode, FdLink};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::{BtfTracePoint, CgroupSockAddr};
use aya::{Btf, Ebpf, EbpfLoader};
use tyr_policy::compile::KernelTables;

use super::events::EventReader;
use super::maps::{self, EXE_KEY_LEN, TyrConfig, TyrExeKey, TyrLpmData, TyrLpmVal, TyrProc};
use super::mounts::{cgroup2_root, ensure_bpffs};
use super::{
    Counters, Hook, KernelError, MAPS, PROGRAMS, TABLES_PER_SLOT, TRACEPOINT_OBJ, UNPINNED_MAPS,
    load_program, map_err, prog_err, tables,
};

/// The loaded and attached tracepoint tier.
pub struct Tracepoints {
    ebpf: Ebpf,
    /// Attachments still owned by this object (detached on drop unless pinned).
    links: Vec<Attached>,
    /// LPM keys written per table slot (removed before the slot is refilled).
    lpm_keys: [Vec<LpmKey<TyrLpmData>>; 2],
    /// Whether a syscall denied at entry is made to fail (see [`Tracepoints::refuses_at_entry`]).
    write_user: bool,
}

enum Attached {
    Btf(&'static str, BtfTracePointLinkId),
    Cgroup(&'static str, CgroupSockAddrLinkId),
}

impl Tracepoints {
    /// Loads and attaches every program. Until [`Tracepoints::load_tables`] runs, nothing is
    /// decided (the identity hooks already run).
    pub fn load() -> Result<Self, KernelError> {
        Self::load_with_capacity(None)
    }

    /// [`Tracepoints::load`] with a process map of `procs` entries instead of the default
    /// (a full map fails closed: children that cannot be recorded are killed when governed).
    pub fn load_with_capacity(procs: Option<u32>) -> Result<Self, KernelError> {
        Self::load_inner(procs, None)
    }

    /// Loads with every map pinned under `DIR/maps` (reusing the maps a previous daemon
    /// pinned there: identities, tables, unread events), attaches, then replaces the
    /// attachments pinned under `DIR/links` with its own. The programs keep enforcing after
    /// this object is dropped or the daemon exits; a restarted daemon calling this again takes
    /// over without a gap (old and new programs overlap for a moment). Maps are reused by
    /// name: a change of map layout needs the pins removed first. Removing `DIR` detaches
    /// everything.
    pub fn load_pinned(dir: &Path) -> Result<Self, KernelError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(dir.join("maps"))?;
        std::fs::create_dir_all(dir.join("links"))?;
        let mut tp = Self::load_inner(None, Some(&dir.join("maps")))?;
        tp.adopt_lpm_keys()?;
        tp.pin_links(&dir.join("links"))?;
        Ok(tp)
    }

    fn load_inner(procs: Option<u32>, map_pins: Option<&Path>) -> Result<Self, KernelError> {
        let btf = Btf::from_sys_fs()?;
        let write_user = user_writes_allowed();
        let write_flag = u8::from(write_user);
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf));
        loader.override_global("tyr_write_user", &write_flag, true);
        if let Some(n) = procs {
            loader.map_max_entries("tyr_procs", n);
        }
        if let Some(dir) = map_pins {
            super::pins::drop_incompatible(TRACEPOINT_OBJ, dir)?;
            for name in MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(TRACEPOINT_OBJ)?;
        if let Some((name, _)) = ebpf
            .maps()
            .find(|(n, _)| !MAPS.contains(n) && !UNPINNED_MAPS.contains(n))
        {
            return Err(KernelError::Unlisted(name.to_owned()));
        }
        for (name, hook) in PROGRAMS {
            load_program(&mut ebpf, name, hook, &btf)?;
        }
        // Before the identity hooks attach: every exec is classified with the full list.
        let mut interps: HashMap<_, TyrExeKey, u32> = HashMap::try_from(
            ebpf.map_mut("tyr_interps")
                .ok_or(KernelError::MissingMap("tyr_interps"))?,
        )
        .map_err(map_err("tyr_interps"))?;
        for path in super::interps::installed() {
            // Paths too long for the key are not interpreters the kernel can recognise.
            if let Ok(key) = exe_key(&path) {
                interps.insert(key, 1, 0).map_err(map_err("tyr_interps"))?;
            }
        }
        let cgroup = std::fs::File::open(cgroup2_root()?)?;
        let mut links = Vec::with_capacity(PROGRAMS.len());
        for (name, hook) in PROGRAMS {
            let prog = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?;
            let link = match hook {
                Hook::Btf(_) => {
                    let p: &mut BtfTracePoint = prog.try_into().map_err(prog_err(name))?;
                    Attached::Btf(name, p.attach().map_err(prog_err(name))?)
                }
                Hook::Cgroup(_) => {
                    let p: &mut CgroupSockAddr = prog.try_into().map_err(prog_err(name))?;
                    // A bpf_link (flags 0): coexists with other programs on the cgroup.
                    let id = p
                        .attach(&cgroup, CgroupAttachMode::Single)
                        .map_err(prog_err(name))?;
                    Attached::Cgroup(name, id)
                }
            };
            links.push(link);
        }
        Ok(Tracepoints {
            ebpf,
            links,
            lpm_keys: Default::default(),
            write_user,
        })
    }

    /// Whether an `O_CREAT`/`O_TRUNC` open, link or rename denied at syscall entry is made to
    /// fail before the kernel acts (its path string is emptied in the caller's memory, then
    /// the caller is killed). False under kernel lockdown, which forbids BPF writes to user
    /// memory: the caller is still killed, but the syscall runs.
    pub fn refuses_at_entry(&self) -> bool {
        self.write_user
    }

    pub(super) fn map_mut(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::maps::Map, KernelError> {
        self.ebpf.map_mut(name).ok_or(KernelError::MissingMap(name))
    }

    fn capacity<V: aya::Pod>(&self, name: &'static str) -> Result<u32, KernelError> {
        let map = self.ebpf.map(name).ok_or(KernelError::MissingMap(name))?;
        Ok(Array::<_, V>::try_from(map).map_err(map_err(name))?.len())
    }

    fn array<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<Array<&mut MapData, V>, KernelError> {
        Array::try_from(self.map_mut(name)?).map_err(map_err(name))
    }

    fn write_at<V: aya::Pod>(
        &mut self,
        name: &'static str,
        base: u32,
        values: &[V],
    ) -> Result<(), KernelError> {
        let mut array = self.array::<V>(name)?;
        for (i, v) in (base..).zip(values) {
            array.set(i, v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Writes `tables` into the idle table slot, makes it the active one with a single 4-byte
    /// store, then waits until no program still runs on the old slot (an RCU grace period,
    /// forced by updating a map-of-maps slot): every decision uses either the old or the new
    /// tables, never a mix, and nothing is ever undecided.
    pub fn load_tables(
        &mut self,
        tables: &KernelTables,
        generation: u64,
        allow_events_all: bool,
    ) -> Result<(), KernelError> {
        let active = self
            .array::<u32>("tyr_active")?
            .get(&0, 0)
            .map_err(map_err("tyr_active"))?;
        let slot = 1 - (active & 1);
        let caps = [
            ("tyr_classes", self.capacity::<u16>("tyr_classes")? / 2),
            ("tyr_next", self.capacity::<u32>("tyr_next")? / 2),
            (
                "tyr_accept",
                self.capacity::<maps::TyrAccept>("tyr_accept")? / 2,
            ),
            ("tyr_bin_masks", self.capacity::<u64>("tyr_bin_masks")? / 2),
            ("tyr_cands", self.capacity::<u32>("tyr_cands")? / 2),
            (
                "tyr_rules",
                self.capacity::<maps::TyrRule>("tyr_rules")? / 2,
            ),
            (
                "tyr_ports",
                self.capacity::<maps::TyrPortRange>("tyr_ports")? / 2,
            ),
            ("tyr_lpm", self.lpm_capacity()? / 2),
            ("tyr_tables", TABLES_PER_SLOT),
        ];
        let cap = |name: &str| caps.iter().find(|c| c.0 == name).map_or(0, |c| c.1);
        let bases = tables::Bases {
            slot: slot as u8,
            ports: slot * cap("tyr_ports"),
            classes: slot * cap("tyr_classes"),
            next: slot * cap("tyr_next"),
            accept: slot * cap("tyr_accept"),
            bin_masks: slot * cap("tyr_bin_masks"),
            cands: slot * cap("tyr_cands"),
            rules: slot * cap("tyr_rules"),
        };
        let mut flat = tables::flatten(tables, generation, allow_events_all, bases)?;
        let current = self
            .array::<TyrConfig>("tyr_config")?
            .get(&(active & 1), 0)
            .map_err(map_err("tyr_config"))?;
        flat.config.epoch = current.epoch.wrapping_add(1).max(1);
        flat.check(cap)?;
        self.write_at("tyr_classes", bases.classes, &flat.classes)?;
        self.write_at("tyr_next", bases.next, &flat.next)?;
        self.write_at("tyr_accept", bases.accept, &flat.accept)?;
        self.write_at("tyr_bin_masks", bases.bin_masks, &flat.bin_masks)?;
        self.write_at("tyr_cands", bases.cands, &flat.cands)?;
        self.write_at("tyr_rules", bases.rules, &flat.rules)?;
        self.write_at("tyr_ports", bases.ports, &flat.ports)?;
        self.write_lpm(slot as usize, &flat.lpm)?;
        self.write_at("tyr_tables", slot * TABLES_PER_SLOT, &flat.tables)?;
        let masks = agent_layers(&flat.config.layer_agent, flat.config.nlayers);
        self.write_at("tyr_agent_layers", slot * AGENTS, &masks)?;
        self.write_at::<TyrConfig>("tyr_config", slot, &[flat.config])?;
        self.write_at::<u32>("tyr_active", 0, &[slot])?;
        self.rcu_barrier()
    }

    /// Returns once every program that started before the call has finished.
    fn rcu_barrier(&mut self) -> Result<(), KernelError> {
        let name = "tyr_barrier";
        let inner: Array<MapData, u32> = Array::create(1, 0).map_err(map_err(name))?;
        let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, u32>> =
            ArrayOfMaps::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        outer.set(0, &inner, 0).map_err(map_err(name))
    }

    fn lpm(&mut self) -> Result<LpmTrie<&mut MapData, TyrLpmData, TyrLpmVal>, KernelError> {
        LpmTrie::try_from(self.map_mut("tyr_lpm")?).map_err(map_err("tyr_lpm"))
    }

    fn lpm_capacity(&self) -> Result<u32, KernelError> {
        match self.ebpf.map("tyr_lpm") {
            Some(aya::maps::Map::LpmTrie(data)) => {
                Ok(data.info().map_err(map_err("tyr_lpm"))?.max_entries())
            }
            _ => Err(KernelError::MissingMap("tyr_lpm")),
        }
    }

    /// Replaces the LPM entries of `slot` (the idle one) with `rows`.
    fn write_lpm(&mut self, slot: usize, rows: &[tables::LpmRow]) -> Result<(), KernelError> {
        let stale = std::mem::take(&mut self.lpm_keys[slot]);
        let mut trie = self.lpm()?;
        for key in &stale {
            match trie.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("tyr_lpm")(e)),
            }
        }
        let mut keys = Vec::with_capacity(rows.len());
        for &(bits, data, val) in rows {
            let key = LpmKey::new(bits, data);
            trie.insert(&key, val, 0).map_err(map_err("tyr_lpm"))?;
            keys.push(key);
        }
        self.lpm_keys[slot] = keys;
        Ok(())
    }

    fn procs(&mut self) -> Result<HashMap<&mut MapData, u32, TyrProc>, KernelError> {
        HashMap::try_from(self.map_mut("tyr_procs")?).map_err(map_err("tyr_procs"))
    }

    /// Records the identity of process `tgid` (the classifier, tests).
    pub fn set_process(&mut self, tgid: u32, proc: TyrProc) -> Result<(), KernelError> {
        self.procs()?
            .insert(tgid, proc, 0)
            .map_err(map_err("tyr_procs"))
    }

    /// The identity of process `tgid`, if it has one.
    pub fn process(&mut self, tgid: u32) -> Result<Option<TyrProc>, KernelError> {
        match self.procs()?.get(&tgid, 0) {
            Ok(p) => Ok(Some(p)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("tyr_procs")(e)),
        }
    }

    /// Forgets the identity of process `tgid` (absent is fine).
    pub fn remove_process(&mut self, tgid: u32) -> Result<(), KernelError> {
        match self.procs()?.remove(&tgid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("tyr_procs")(e)),
        }
    }

    /// Every recorded process identity (tgid, identity).
    pub fn processes(&mut self) -> Result<Vec<(u32, TyrProc)>, KernelError> {
        self.procs()?
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("tyr_procs"))
    }

    /// Processes launched in cgroup v2 `cgroup_id` are classified as `agent_type_id` at exec.
    pub fn set_cgroup_agent(
        &mut self,
        cgroup_id: u64,
        agent_type_id: u8,
    ) -> Result<(), KernelError> {
        let map = self.map_mut("tyr_cgroups")?;
        let mut cgroups: HashMap<_, u64, u32> =
            HashMap::try_from(map).map_err(map_err("tyr_cgroups"))?;
        cgroups
            .insert(cgroup_id, u32::from(agent_type_id), 0)
            .map_err(map_err("tyr_cgroups"))
    }

    /// A process executing `path` (absolute, canonical) is classified as `agent_type_id`.
    pub fn set_agent_exe(&mut self, path: &Path, agent_type_id: u8) -> Result<(), KernelError> {
        let key = exe_key(path)?;
        let map = self.map_mut("tyr_exes")?;
        let mut exes: HashMap<_, TyrExeKey, u32> =
            HashMap::try_from(map).map_err(map_err("tyr_exes"))?;
        exes.insert(key, u32::from(agent_type_id), 0)
            .map_err(map_err("tyr_exes"))
    }

    /// The kernel counters, summed over CPUs.
    pub fn counters(&mut self) -> Result<Counters, KernelError> {
        let map = self.map_mut("tyr_counters")?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_err("tyr_counters"))?;
        let sum = |i: u32| -> Result<u64, KernelError> {
            let values = counters.get(&i, 0).map_err(map_err("tyr_counters"))?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            ringbuf_drops: sum(maps::COUNTER_RINGBUF_DROPS)?,
            fork_full: sum(maps::COUNTER_FORK_FULL)?,
            fail_closed: sum(maps::COUNTER_FAIL_CLOSED)?,
            uwrite_failed: sum(maps::COUNTER_UWRITE_FAILED)?,
            allow_unqueued: sum(maps::COUNTER_ALLOW_UNQUEUED)?,
        })
    }

    /// Records the LPM keys already in a reused trie, so that refilling a slot removes them.
    fn adopt_lpm_keys(&mut self) -> Result<(), KernelError> {
        let trie = self.lpm()?;
        let keys = trie
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("tyr_lpm"))?;
        for key in keys {
            let slot = usize::from(key.data().slot & 1);
            self.lpm_keys[slot].push(key);
        }
        Ok(())
    }

    /// Pins every attachment at `DIR/NAME`, replacing (detaching) one pinned there before,
    /// then detaches what an earlier build pinned there under names this build does not use
    /// (its programs would go on deciding next to these).
    fn pin_links(&mut self, dir: &Path) -> Result<(), KernelError> {
        for link in std::mem::take(&mut self.links) {
            let (name, fd) = match link {
                Attached::Btf(name, id) => {
                    let p: &mut BtfTracePoint = self.program(name)?;
                    (name, FdLink::from(p.take_link(id).map_err(prog_err(name))?))
                }
                Attached::Cgroup(name, id) => {
                    let p: &mut CgroupSockAddr = self.program(name)?;
                    let link = p.take_link(id).map_err(prog_err(name))?;
                    (name, FdLink::try_from(link)?)
                }
            };
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            fd.pin(path)?;
        }
        let ours = |name: &str| {
            PROGRAMS.iter().any(|(p, _)| *p == name)
                || super::lsm::LSM_PROGRAMS.iter().any(|(p, _)| *p == name)
        };
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_name().to_str().is_some_and(ours) {
                tracing::info!(link = ?entry.file_name(), "detaching a program of an earlier build");
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Marks opens, links and renames as refused by the LSM programs: the entry programs no
    /// longer decide them (a kill would pre-empt the LSM's `EPERM`).
    pub(super) fn lsm_refuses_at_entry(&mut self) -> Result<(), KernelError> {
        self.write_at::<u32>("tyr_lsm_on", 0, &[1])
    }

    fn program<'a, P>(&'a mut self, name: &'static str) -> Result<&'a mut P, KernelError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram(name))?;
        prog.try_into().map_err(prog_err(name))
    }

    /// Takes the event ring buffer (once); needs a tokio runtime.
    pub fn events(&mut self) -> Result<EventReader, KernelError> {
        let map = self
            .ebpf
            .take_map("tyr_events")
            .ok_or(KernelError::MissingMap("tyr_events"))?;
        let ring = RingBuf::try_from(map).map_err(map_err("tyr_events"))?;
        Ok(EventReader::new(ring)?)
    }
}

/// Agent types per table slot in `tyr_agent_layers` (`TYR_AGENTS`).
const AGENTS: u32 = 256;

/// Per agent type, the mask of the layers that apply: the base (bit 0) and the overlays of
/// that agent type (agent type 0, unclassified, gets the base only).
fn agent_layers(layer_agent: &[u8], nlayers: u32) -> Vec<u64> {
    (0..AGENTS)
        .map(|agent| {
            layer_agent
                .iter()
                .enumerate()
                .take(nlayers as usize)
                .skip(1)
                .filter(|&(_, &a)| a != 0 && u32::from(a) == agent)
                .fold(1u64, |mask, (li, _)| mask | (1u64 << li))
        })
        .collect()
}

/// The executable-path key of `path` (NUL-padded); too long is an error.
fn exe_key(path: &Path) -> Result<TyrExeKey, KernelError> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= EXE_KEY_LEN {
        return Err(KernelError::ExePath {
            path: path.display().to_string(),
        });
    }
    let mut key = TyrExeKey {
        path: [0; EXE_KEY_LEN],
    };
    key.path[..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

/// Whether BPF programs may write user memory: not under kernel lockdown (`integrity` or
/// `confidentiality`); unknown (no securityfs) counts as no.
fn user_writes_allowed() -> bool {
    match std::fs::read_to_string("/sys/kernel/security/lockdown") {
        Ok(state) => state.contains("[none]"),
        // No lockdown LSM at all.
        Err(_) => std::fs::read_to_string(super::probe::LSM_LIST)
            .is_ok_and(|l| !l.trim().split(',').any(|m| m == "lockdown")),
    }
}

#[cfg(test)]
mod tests {
    use super::agent_layers;

    #[test]
    fn agent_layer_masks_hold_the_base_and_the_agents_overlays() {
        let layer_agent = [0u8, 2, 1, 2, 9];
        let masks = agent_layers(&layer_agent, 4);
        assert_eq!(masks.len(), 256);
        assert_eq!(masks[0], 0b1);
        assert_eq!(masks[1], 0b101);
        assert_eq!(masks[2], 0b1011);
        assert_eq!(masks[9], 0b1, "layer 4 is beyond nlayers");
    }
}
