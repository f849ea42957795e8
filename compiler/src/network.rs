//! Profile network allowlists as the bundle carries them, and their lowering to the
//! kernel's `NET_ALLOW` LPM trie.
//!
//! A workload's profile may police **egress** (`connect`: which peers, ports and
//! protocols) and **ingress** (`bind` and `listen`: which local ports and protocols).
//! A direction the profile does not mention is not policed by it (only Cedar rules
//! decide there); a direction it mentions, even with no rule, is an allowlist, so
//! anything outside it is drift.
//!
//! DNS names are carried as names and resolved on the node at load time (addresses
//! are facts of the node and the moment, like inodes); [`lower`] takes the resolved
//! peers. Each trie entry holds the union of the port ranges of every rule whose range
//! contains the entry's, so the kernel's one longest-prefix match decides.
use std::{collections::BTreeMap, net::IpAddr};

use driftwall_abi::{
    WorkloadId,
    rules::{
        DIRECTION_EGRESS, DIRECTION_INGRESS, FAMILY_V4, FAMILY_V6, MAX_NET_ALLOW_ENTRIES,
        MAX_PORT_RANGES, NetAllowKey, PROTO_TCP, PROTO_UDP, PortRange, PortSet, net_allow_key,
    },
};
use serde::{Deserialize, Serialize};

use crate::cedar::tables::ip_bytes;

/// A workload's allowlist for one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAllowlist {
    pub rules: Vec<NetRule>,
}

/// One allowlist entry: any of `peers`, on any of `ports`, over `protocols`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetRule {
    /// Empty: any address.
    pub peers: Vec<NetPeer>,
    /// Inclusive ranges; empty: any port.
    pub ports: Vec<(u16, u16)>,
    /// `PROTO_TCP` | `PROTO_UDP`; never 0.
    pub protocols: u8,
}

/// A peer: an address range, or a DNS name resolved on the node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NetPeer {
    Cidr { addr: IpAddr, prefix: u8 },
    Dns(String),
}

/// Why allowlists could not be lowered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error(
        "workload {workload}: {direction} allowlist needs {count} port ranges for one address range; the kernel holds {MAX_PORT_RANGES}"
    )]
    TooManyRanges {
        workload: String,
        direction: &'static str,
        count: usize,
    },
    #[error("network allowlists need {0} kernel entries; the kernel holds {MAX_NET_ALLOW_ENTRIES}")]
    TooManyEntries(usize),
}

/// A `NET_ALLOW` entry: (workload, direction, family, network address, prefix).
pub type NetEntryKey = (WorkloadId, u8, u8, [u8; 16], u8);

/// One workload's allowlist for one direction, its peers already resolved.
pub struct ResolvedAllowlist<'a> {
    pub workload: WorkloadId,
    pub name: &'a str,
    pub direction: u8,
    /// Per rule: the addresses it allows (empty: any), its ports and protocols.
    pub rules: Vec<(Vec<(IpAddr, u8)>, &'a NetRule)>,
}

/// The `NET_ALLOW` entries for the allowlists.
pub fn lower(lists: &[ResolvedAllowlist<'_>]) -> Result<BTreeMap<NetEntryKey, PortSet>, NetError> {
    let mut out = BTreeMap::new();
    for list in lists {
        // (family, addr, prefix) → ranges of the rules naming exactly that range.
        let mut own: BTreeMap<(u8, [u8; 16], u8), Vec<PortRange>> = BTreeMap::new();
        for (peers, rule) in &list.rules {
            let ranges: Vec<PortRange> = if rule.ports.is_empty() {
                vec![range(0, u16::MAX, rule.protocols)]
            } else {
                rule.ports
                    .iter()
                    .map(|(a, b)| range(*a, *b, rule.protocols))
                    .collect()
            };
            let targets: Vec<(u8, [u8; 16], u8)> = if peers.is_empty() {
                vec![(FAMILY_V4, [0; 16], 0), (FAMILY_V6, [0; 16], 0)]
            } else {
                peers
                    .iter()
                    .map(|(ip, prefix)| {
                        let (family, addr) = ip_bytes(*ip);
                        let max = if family == FAMILY_V4 { 32 } else { 128 };
                        let prefix = (*prefix).min(max);
                        (family, mask(addr, prefix), prefix)
                    })
                    .collect()
            };
            for t in targets {
                own.entry(t).or_default().extend(ranges.iter().copied());
            }
        }
        // Close each entry over the entries whose range contains it.
        for (family, addr, prefix) in own.keys() {
            let mut ranges: Vec<PortRange> = own
                .iter()
                .filter(|((f, a, p), _)| f == family && p <= prefix && mask(*addr, *p) == *a)
                .flat_map(|(_, r)| r.iter().copied())
                .collect();
            ranges = merge(ranges);
            if ranges.len() > MAX_PORT_RANGES {
                return Err(NetError::TooManyRanges {
                    workload: list.name.to_string(),
                    direction: if list.direction == DIRECTION_EGRESS {
                        "egress"
                    } else {
                        "ingress"
                    },
                    count: ranges.len(),
                });
            }
            let mut set = PortSet {
                count: ranges.len() as u32,
                ..PortSet::default()
            };
            set.ranges[..ranges.len()].copy_from_slice(&ranges);
            out.insert(
                (list.workload, list.direction, *family, *addr, *prefix),
                set,
            );
        }
    }
    if out.len() > MAX_NET_ALLOW_ENTRIES as usize {
        return Err(NetError::TooManyEntries(out.len()));
    }
    Ok(out)
}

/// The trie key and prefix length of an entry, as the kernel holds it.
pub fn trie_key(key: &NetEntryKey) -> (u32, NetAllowKey) {
    let (workload, direction, family, addr, prefix) = *key;
    (
        64 + u32::from(prefix),
        net_allow_key(workload, direction, family, &addr),
    )
}

/// The longest entry of `entries` matching the address: what the kernel's look-up
/// returns.
pub fn longest_match<'a>(
    entries: &'a BTreeMap<NetEntryKey, PortSet>,
    workload: WorkloadId,
    direction: u8,
    family: u8,
    addr: &[u8; 16],
) -> Option<&'a PortSet> {
    entries
        .iter()
        .filter(|((w, d, f, a, p), _)| {
            *w == workload && *d == direction && *f == family && mask(*addr, *p) == *a
        })
        .max_by_key(|((.., p), _)| *p)
        .map(|(_, set)| set)
}

/// Whether `name` is a DNS host name: 1–253 bytes of dot-separated labels of 1–63
/// letters, digits and hyphens, not starting or ending with a hyphen.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The direction tag of a hook's allowlist.
pub const EGRESS: u8 = DIRECTION_EGRESS;
pub const INGRESS: u8 = DIRECTION_INGRESS;

fn range(first: u16, last: u16, protocols: u8) -> PortRange {
    PortRange {
        first,
        last,
        protocols: protocols & (PROTO_TCP | PROTO_UDP),
        _pad: [0; 3],
    }
}

/// Per protocol, overlapping or adjacent ranges joined; sorted.
fn merge(ranges: Vec<PortRange>) -> Vec<PortRange> {
    let mut out = Vec::new();
    for proto in [PROTO_TCP, PROTO_UDP] {
        let mut rs: Vec<(u16, u16)> = ranges
            .iter()
            .filter(|r| r.protocols & proto != 0)
            .map(|r| (r.first, r.last))
            .collect();
        rs.sort();
        let mut joined: Vec<(u16, u16)> = Vec::new();
        for (a, b) in rs {
            match joined.last_mut() {
                Some((_, last)) if u32::from(a) <= u32::from(*last) + 1 => *last = (*last).max(b),
                _ => joined.push((a, b)),
            }
        }
        out.extend(joined.into_iter().map(|(a, b)| range(a, b, proto)));
    }
    // A range allowed over both protocols takes one slot.
    let mut both: Vec<PortRange> = Vec::new();
    for r in out {
        if let Some(same) = both
            .iter_mut()
            .find(|o| o.first == r.first && o.last == r.last)
        {
            same.protocols |= r.protocols;
        } else {
            both.push(r);
        }
    }
    both.sort();
    both
}

/// `addr` with the bits below `prefix` cleared.
fn mask(addr: [u8; 16], prefix: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in addr.iter().enumerate() {
        let bits = u32::from(prefix).saturating_sub(8 * i as u32).min(8);
        out[i] = if bits == 0 {
            0
        } else {
            b & (0xffu8 << (8 - bits))
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwall_abi::rules::{IPPROTO_TCP, IPPROTO_UDP};

    fn rule(ports: &[(u16, u16)], protocols: u8) -> NetRule {
        NetRule {
            peers: Vec::new(),
            ports: ports.to_vec(),
            protocols,
        }
    }

    fn v4(s: &str) -> [u8; 16] {
        ip_bytes(s.parse().unwrap()).1
    }

    #[test]
    fn nested_ranges_inherit_the_ports_of_wider_ones() {
        let wide = rule(&[(443, 443)], PROTO_TCP);
        let narrow = rule(&[(5432, 5432)], PROTO_TCP);
        let list = ResolvedAllowlist {
            workload: 3,
            name: "web",
            direction: EGRESS,
            rules: vec![
                (vec![("10.0.0.0".parse().unwrap(), 8)], &wide),
                (vec![("10.1.2.3".parse().unwrap(), 32)], &narrow),
            ],
        };
        let entries = lower(&[list]).unwrap();
        assert_eq!(entries.len(), 2);
        let db = longest_match(&entries, 3, EGRESS, FAMILY_V4, &v4("10.1.2.3")).unwrap();
        assert!(db.allows(5432, IPPROTO_TCP) && db.allows(443, IPPROTO_TCP));
        let other = longest_match(&entries, 3, EGRESS, FAMILY_V4, &v4("10.9.9.9")).unwrap();
        assert!(other.allows(443, IPPROTO_TCP) && !other.allows(5432, IPPROTO_TCP));
        assert!(longest_match(&entries, 3, EGRESS, FAMILY_V4, &v4("11.0.0.1")).is_none());
        assert!(longest_match(&entries, 4, EGRESS, FAMILY_V4, &v4("10.1.2.3")).is_none());
        assert!(longest_match(&entries, 3, INGRESS, FAMILY_V4, &v4("10.1.2.3")).is_none());
    }

    #[test]
    fn no_peers_means_any_address_of_both_families_and_ranges_merge() {
        let r = rule(
            &[(8000, 8100), (8050, 8999), (9000, 9000), (53, 53)],
            PROTO_TCP,
        );
        let u = rule(&[(53, 53)], PROTO_UDP);
        let list = ResolvedAllowlist {
            workload: 1,
            name: "w",
            direction: INGRESS,
            rules: vec![(Vec::new(), &r), (Vec::new(), &u)],
        };
        let entries = lower(&[list]).unwrap();
        let any6 = longest_match(&entries, 1, INGRESS, FAMILY_V6, &[0x20; 16]).unwrap();
        // 53 over both protocols, and 8000-9000 over TCP: two ranges.
        assert_eq!(any6.count, 2, "{any6:?}");
        assert!(any6.allows(53, IPPROTO_UDP) && any6.allows(8999, IPPROTO_TCP));
        assert!(!any6.allows(8999, IPPROTO_UDP) && !any6.allows(9001, IPPROTO_TCP));
    }

    #[test]
    fn too_many_ranges_for_one_entry_is_an_error() {
        let ports: Vec<(u16, u16)> = (0..=MAX_PORT_RANGES as u16)
            .map(|i| (i * 10, i * 10))
            .collect();
        let r = rule(&ports, PROTO_TCP);
        let list = ResolvedAllowlist {
            workload: 1,
            name: "w",
            direction: EGRESS,
            rules: vec![(Vec::new(), &r)],
        };
        assert!(matches!(
            lower(&[list]),
            Err(NetError::TooManyRanges { .. })
        ));
    }
}
