//! Destination addresses → longest-prefix-match entries carrying first-match candidates.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::tables::LpmEntry;
use super::{Candidates, CompileError};
use crate::model::Rule;

/// The LPM key bytes of `ip` (IPv4 in the first 4 bytes) and its family.
pub(crate) fn key(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut addr = [0u8; 16];
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (4, addr)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

/// One entry per distinct prefix of the rules' CIDRs plus `/0` for each family. The entry of
/// prefix `P` lists, in order, the rules with a CIDR containing `P` and the rules without
/// CIDRs: since every rule CIDR is itself an entry, the longest entry containing an address
/// lists exactly the rules whose CIDRs contain the address, so first-match is preserved.
pub(crate) fn lpm(
    rules: &[(usize, &Rule)],
    cands: &mut Candidates,
) -> Result<Vec<LpmEntry>, CompileError> {
    let mut prefixes: Vec<IpNet> = vec![Ipv4Net::default().into(), Ipv6Net::default().into()];
    for (_, rule) in rules {
        prefixes.extend(rule.cidrs.iter().map(IpNet::trunc));
    }
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut entries = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        let list: Vec<u32> = rules
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.cidrs.is_empty() || r.cidrs.iter().any(|c| c.contains(&prefix)))
            .map(|(pos, _)| pos as u32)
            .collect();
        let (cand_off, cand_len) = cands.slice(&list)?;
        let (family, addr) = match prefix {
            IpNet::V4(n) => (4, key(n.network().into()).1),
            IpNet::V6(n) => (6, n.network().octets()),
        };
        entries.push(LpmEntry {
            family,
            prefix_len: prefix.prefix_len(),
            addr,
            cand_off,
            cand_len,
        });
    }
    Ok(entries)
}
