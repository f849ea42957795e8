//! Records the kernel programs could not deliver: when a ring buffer is full, a
//! program keeps its decision but counts the lost record in the per-CPU
//! `LOST_RECORDS` map. [`LossMonitor`] turns the growth of those counters into
//! [`Gap`]s that the agent reports (a `gap` line, the `events_lost` metric, a gap
//! event in the context graph that every Flashback crossing it shows), so a story
//! that crosses a gap is never mistaken for a whole one.
//!
//! It also validates the ring-buffer size an operator asks for (`--ring-bytes`).
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use driftwall_abi::{LOST_EVENTS, LOST_LIFECYCLE, MAX_RING_BYTES, MIN_RING_BYTES, names};

use crate::programs::ProgramsError;

/// Records lost on one CPU since the last poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// `events` (decisions) or `lifecycle` (fork, exec, exit).
    pub ring: &'static str,
    pub cpu: u32,
    pub lost: u64,
    /// The window the records were lost in: the previous poll and this one
    /// (`CLOCK_BOOTTIME` ns, the programs' clock).
    pub from_boot_ns: u64,
    pub to_boot_ns: u64,
}

/// Reads `LOST_RECORDS` and reports what grew.
pub struct LossMonitor {
    counters: PerCpuArray<MapData, u64>,
    /// Last value seen, per ring and CPU.
    seen: [Vec<u64>; 2],
    /// When the last poll read them.
    polled_boot_ns: u64,
}

/// `CLOCK_BOOTTIME` now, in ns.
fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

impl LossMonitor {
    /// Takes the counters out of the loaded object.
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, ProgramsError> {
        let map = ebpf
            .take_map(names::LOST_RECORDS)
            .ok_or(ProgramsError::Missing(names::LOST_RECORDS))?;
        Self::from_map(map)
    }

    /// Watches the counters of `map` (the loaded object's, or a pinned set's). The first
    /// poll reports whatever they hold already: for an adopted set that is every record
    /// its programs ever lost, those a previous agent reported too — a gap said twice
    /// rather than records lost while no agent watched said never.
    pub fn from_map(map: aya::maps::Map) -> Result<Self, ProgramsError> {
        let counters = PerCpuArray::try_from(map).map_err(|source| ProgramsError::Map {
            name: names::LOST_RECORDS,
            source,
        })?;
        Ok(LossMonitor {
            counters,
            seen: [Vec::new(), Vec::new()],
            polled_boot_ns: boot_ns(),
        })
    }

    /// The gaps since the last poll, one per ring and CPU that lost records.
    pub fn poll(&mut self) -> Result<Vec<Gap>, ProgramsError> {
        let mut gaps = Vec::new();
        let (from, to) = (self.polled_boot_ns, boot_ns());
        self.polled_boot_ns = to;
        for (slot, (index, ring)) in [(LOST_EVENTS, "events"), (LOST_LIFECYCLE, "lifecycle")]
            .into_iter()
            .enumerate()
        {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(|source| ProgramsError::Map {
                    name: names::LOST_RECORDS,
                    source,
                })?;
            let now: Vec<u64> = values.iter().copied().collect();
            gaps.extend(
                growth(ring, &self.seen[slot], &now)
                    .into_iter()
                    .map(|g| Gap {
                        from_boot_ns: from,
                        to_boot_ns: to,
                        ..g
                    }),
            );
            self.seen[slot] = now;
        }
        Ok(gaps)
    }
}

/// What grew from `before` to `now`, per CPU (a CPU not seen before started at 0).
fn growth(ring: &'static str, before: &[u64], now: &[u64]) -> Vec<Gap> {
    now.iter()
        .enumerate()
        .filter_map(|(cpu, &n)| {
            let lost = n.saturating_sub(before.get(cpu).copied().unwrap_or(0));
            (lost > 0).then(|| Gap {
                ring,
                cpu: u32::try_from(cpu).unwrap_or(u32::MAX),
                lost,
                from_boot_ns: 0,
                to_boot_ns: 0,
            })
        })
        .collect()
}

/// Why a ring-buffer size is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ring buffer size {given:?}: {reason} (a power of two from 4K to 1G bytes, e.g. 4194304 or 4M)"
)]
pub struct RingSizeError {
    pub given: String,
    pub reason: &'static str,
}

/// Parses a ring-buffer size: bytes, or a number with a binary `K`, `M` or `G` suffix.
pub fn parse_ring_bytes(s: &str) -> Result<u32, RingSizeError> {
    let err = |reason| RingSizeError {
        given: s.to_string(),
        reason,
    };
    let bytes = crate::config::parse_size(s).map_err(err)?;
    if bytes < u64::from(MIN_RING_BYTES) || bytes > u64::from(MAX_RING_BYTES) {
        return Err(err("out of range"));
    }
    if !bytes.is_power_of_two() {
        return Err(err("not a power of two"));
    }
    u32::try_from(bytes).map_err(|_| err("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_cpu_and_only_what_grew() {
        assert_eq!(growth("events", &[], &[0, 0]), vec![]);
        assert_eq!(
            growth("events", &[1, 5], &[4, 5, 2]),
            vec![
                Gap {
                    ring: "events",
                    cpu: 0,
                    lost: 3,
                    from_boot_ns: 0,
                    to_boot_ns: 0
                },
                Gap {
                    ring: "events",
                    cpu: 2,
                    lost: 2,
                    from_boot_ns: 0,
                    to_boot_ns: 0
                }
            ]
        );
    }

    #[test]
    fn ring_sizes_are_powers_of_two_within_limits() {
        assert_eq!(parse_ring_bytes("4096"), Ok(4096));
        assert_eq!(parse_ring_bytes("4M"), Ok(4 << 20));
        assert_eq!(parse_ring_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_ring_bytes("1G"), Ok(1 << 30));
        for bad in [
            "",
            "M",
            "3000",
            "2048",
            "2G",
            "-4K",
            "4.5M",
            "99999999999999999999G",
        ] {
            assert!(parse_ring_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
