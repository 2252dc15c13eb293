//! The in-kernel walk, emulated over the flat tables with the same bounded loops the BPF
//! programs use; and the request fields the daemon computes for the kernel.

use super::net;
use super::tables::{ActionTable, KernelTables, LpmEntry, Matcher, verdict_of};
use crate::model::{Action, Decision, EnforcedIn, Verdict};
use crate::request::{Request, Resource};
use crate::sni::domain_matches;

/// Longest path walked; a longer one fails closed.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest SNI walked (DNS names have at most 253 bytes); a longer one fails closed.
pub const MAX_SNI_LEN: usize = 255;
/// Most candidates scanned for one resource.
pub const MAX_CANDIDATES: usize = 256;
/// Most layers (base + overlays).
pub const MAX_LAYERS: usize = 64;

/// The resource as the kernel hook sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelResource {
    /// Path bytes (`file_read`, `file_write`, `exec`).
    Path(Vec<u8>),
    /// Destination (`net_connect`): family 4 or 6, LPM key bytes, port.
    Addr {
        family: u8,
        addr: [u8; 16],
        port: u16,
    },
    /// Lower-cased SNI without a trailing dot (`tls_connect`).
    Sni(Vec<u8>),
    /// A resource of the wrong kind for the action: only port-less catch-alls apply.
    Other,
}

/// One request in kernel terms: process fields set at exec, and the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRequest {
    pub action: Action,
    /// 0 = not an agent (or a type no table names).
    pub agent_type_id: u8,
    /// Binary globs matching the process binary (0 when unknown).
    pub binary_mask: u64,
    /// Domain patterns matching a name the destination was learned from.
    pub domain_mask: u64,
    pub resource: KernelResource,
}

/// The outcome of the kernel walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelDecision {
    pub verdict: Verdict,
    /// Index into [`KernelTables::layers`].
    pub layer: u32,
    /// Index into that layer's `rule_names`; `None` when a default decided.
    pub rule: Option<u32>,
    /// The walk could not complete (input too long, inconsistent tables): denied.
    pub fail_closed: bool,
}

impl KernelDecision {
    fn fail(layer: usize) -> Self {
        KernelDecision {
            verdict: Verdict::Deny,
            layer: layer as u32,
            rule: None,
            fail_closed: true,
        }
    }
}

/// The mask of `tables.domains` patterns matched by one of `names` (what the daemon stores
/// with an address when it learns it from a DNS answer).
pub fn domain_mask(tables: &KernelTables, names: &[String]) -> u64 {
    tables
        .domains
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, d)| names.iter().any(|n| domain_matches(d, n)))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// The kernel view of `req`, computed as the daemon (process table, DNS cache) and the hooks
/// (path, address, SNI bytes) do.
pub fn kernel_request(tables: &KernelTables, req: &Request) -> KernelRequest {
    let agent_type_id = req
        .agent_type
        .as_ref()
        .and_then(|t| tables.agent_types.iter().position(|n| n == t))
        .filter(|&i| i < 63)
        .map_or(0, |i| i as u8 + 1);
    let binary_mask = req
        .binary
        .as_ref()
        .and_then(|b| tables.binaries.walk(b.as_bytes()))
        .and_then(|s| tables.binary_masks.get(s as usize).copied())
        .unwrap_or(0);
    let resource = match (req.action, &req.resource) {
        (a, Resource::Path(p)) if a.is_path() => KernelResource::Path(p.as_bytes().to_vec()),
        (Action::NetConnect, Resource::Addr { ip, port }) => {
            let (family, addr) = net::key(*ip);
            KernelResource::Addr {
                family,
                addr,
                port: *port,
            }
        }
        (Action::TlsConnect, Resource::Sni(name)) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            KernelResource::Sni(name.to_ascii_lowercase().into_bytes())
        }
        _ => KernelResource::Other,
    };
    KernelRequest {
        action: req.action,
        agent_type_id,
        binary_mask,
        domain_mask: domain_mask(tables, &req.domains),
        resource,
    }
}

/// Decides `req` by walking `tables` exactly as the kernel programs do.
pub fn emulate(tables: &KernelTables, req: &KernelRequest) -> KernelDecision {
    if tables.layers.is_empty() || tables.layers.len() > MAX_LAYERS {
        return KernelDecision::fail(0);
    }
    let mut best: Option<KernelDecision> = None;
    for (li, layer) in tables.layers.iter().enumerate() {
        if li > 0 && (layer.agent_type_id == 0 || layer.agent_type_id != req.agent_type_id) {
            continue;
        }
        let Some(table) = layer.actions.get(req.action.index()) else {
            return KernelDecision::fail(li);
        };
        let Some(d) = decide(table, req, li as u32) else {
            return KernelDecision::fail(li);
        };
        if best.is_none_or(|b| d.verdict > b.verdict) {
            best = Some(d);
        }
    }
    best.unwrap_or(KernelDecision::fail(0))
}

/// One (layer, action) table; `None` = fail closed.
fn decide(table: &ActionTable, req: &KernelRequest, layer: u32) -> Option<KernelDecision> {
    let decision = |verdict, rule| KernelDecision {
        verdict: verdict_of(verdict),
        layer,
        rule,
        fail_closed: false,
    };
    if table.rules.is_empty() {
        return Some(decision(table.default, None));
    }
    let input = match &req.resource {
        KernelResource::Path(p) if req.action.is_path() => Some((p, MAX_PATH_LEN)),
        KernelResource::Sni(s) if req.action == Action::TlsConnect => Some((s, MAX_SNI_LEN)),
        _ => None,
    };
    let (off, len) = match (&table.matcher, input, &req.resource) {
        (_, Some((bytes, max)), _) if bytes.len() > max => return None,
        (
            Matcher::Dfa {
                dfa,
                accept_off,
                accept_len,
            },
            Some((bytes, _)),
            _,
        ) => {
            let state = dfa.walk(bytes)? as usize;
            (*accept_off.get(state)?, *accept_len.get(state)?)
        }
        (Matcher::Lpm(entries), _, KernelResource::Addr { family, addr, .. })
            if req.action == Action::NetConnect =>
        {
            let hit = longest_prefix(entries, *family, addr)?;
            (hit.cand_off, hit.cand_len)
        }
        _ => (table.any_off, table.any_len),
    };
    let port = match req.resource {
        KernelResource::Addr { port, .. } => Some(port),
        _ => None,
    };
    if len as usize > MAX_CANDIDATES {
        return None;
    }
    for i in 0..len as usize {
        let pos = *table.cands.get(off as usize + i)?;
        let rule = table.rules.get(pos as usize)?;
        if rule.binary_req != 0 && req.binary_mask & rule.binary_req == 0 {
            continue;
        }
        if rule.agent_mask != 0
            && (req.agent_type_id == 0
                || req.agent_type_id > 63
                || rule.agent_mask & (1 << req.agent_type_id) == 0)
        {
            continue;
        }
        if rule.domain_req != 0 && req.domain_mask & rule.domain_req == 0 {
            continue;
        }
        if rule.port_len != 0 {
            let start = rule.port_off as usize;
            let ranges = table.ports.get(start..start + rule.port_len as usize)?;
            if !port.is_some_and(|p| ranges.iter().any(|r| r[0] <= p && p <= r[1])) {
                continue;
            }
        }
        return Some(decision(rule.verdict, Some(rule.rule)));
    }
    Some(decision(table.default, None))
}

/// The longest entry of `family` containing `addr` (what the LPM trie lookup returns).
fn longest_prefix<'a>(
    entries: &'a [LpmEntry],
    family: u8,
    addr: &[u8; 16],
) -> Option<&'a LpmEntry> {
    entries
        .iter()
        .filter(|e| e.family == family && prefix_matches(&e.addr, addr, e.prefix_len))
        .max_by_key(|e| e.prefix_len)
}

fn prefix_matches(net: &[u8; 16], addr: &[u8; 16], len: u8) -> bool {
    let len = len.min(128) as usize;
    let (bytes, bits) = (len / 8, len % 8);
    net[..bytes] == addr[..bytes]
        && (bits == 0 || {
            let mask = 0xffu8 << (8 - bits);
            net[bytes] & mask == addr[bytes] & mask
        })
}

impl KernelTables {
    /// The [`Decision`] a kernel decision stands for.
    pub fn decision(&self, d: &KernelDecision) -> Decision {
        Decision {
            verdict: d.verdict,
            layer: self.layer(d.layer),
            rule: d
                .rule
                .and_then(|r| self.rule_name(d.layer, r))
                .map(str::to_owned),
            enforced_in: EnforcedIn::Kernel,
        }
    }
}
