//! Decoding and rendering of the records the kernel programs put on the ring buffer.
//!
//! A record crosses a trust boundary (kernel memory shared with user space, written by
//! programs that could be replaced): every record is checked for its length, kind and
//! enumerations before it is believed, and a malformed one is an error, not a panic.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftwall_abi::{Decision, EventKind, ExecEvent, ExecProbeEvent, FileId, PATH_CAPACITY};
use serde::Serialize;

/// Why a ring-buffer record was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is too short for a kind tag")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record has {len} bytes, expected {expected}")]
    Length {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
    #[error("exec record has an invalid decision {0}")]
    Decision(u8),
    #[error("exec record has a path length of {0}, beyond its buffer")]
    PathLength(u16),
}

/// A file identity as shown to people and scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileIdentity {
    /// `major:minor` of the file system's device.
    pub dev: String,
    pub ino: u64,
}

impl From<FileId> for FileIdentity {
    fn from(f: FileId) -> Self {
        FileIdentity {
            dev: format!("{}:{}", f.major(), f.minor()),
            ino: f.ino,
        }
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Exec(ExecDecisionRecord),
    ExecProbe(ExecProbeEvent),
}

/// An exec decision, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecDecisionRecord {
    pub boot_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: u32,
    pub decision: Decision,
    pub file: FileId,
    /// The path the kernel resolved, when it could (`None` if `d_path` failed).
    pub path: Option<String>,
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
    let tag: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(RecordError::Short(bytes.len()))?;
    let raw_kind = u32::from_ne_bytes(tag);
    let kind = EventKind::from_u32(raw_kind).ok_or(RecordError::UnknownKind(raw_kind))?;
    match kind {
        EventKind::ExecDecision => {
            let ev: ExecEvent = read_pod(bytes, kind)?;
            let decision =
                Decision::from_u8(ev.decision).ok_or(RecordError::Decision(ev.decision))?;
            let path_len = usize::from(ev.path_len);
            if path_len > PATH_CAPACITY {
                return Err(RecordError::PathLength(ev.path_len));
            }
            let path =
                (path_len > 0).then(|| String::from_utf8_lossy(&ev.path[..path_len]).into_owned());
            Ok(Record::Exec(ExecDecisionRecord {
                boot_ns: ev.boot_ns,
                pid: ev.pid,
                tgid: ev.tgid,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                workload: ev.workload,
                decision,
                file: ev.file,
                path,
            }))
        }
        EventKind::ExecProbe => Ok(Record::ExecProbe(read_pod(bytes, kind)?)),
    }
}

/// Copies a plain-old-data record out of the (possibly unaligned) buffer.
fn read_pod<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, RecordError> {
    let expected = std::mem::size_of::<T>();
    if bytes.len() != expected {
        return Err(RecordError::Length {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length is checked, T is a repr(C) abi type for which every bit pattern
    // is valid (integers and byte arrays only), and read_unaligned copes with alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Converts `bpf_ktime_get_boot_ns` values to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Wall-clock time at boot.
    boot_epoch: Duration,
}

impl BootClock {
    /// Samples CLOCK_REALTIME − CLOCK_BOOTTIME now.
    pub fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into ts.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        );
        BootClock {
            boot_epoch: wall.saturating_sub(since_boot),
        }
    }

    /// Wall-clock time of a `boot_ns` stamp, RFC 3339 UTC to the microsecond.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        let t = UNIX_EPOCH + self.boot_epoch + Duration::from_nanos(boot_ns);
        humantime::format_rfc3339_micros(t).to_string()
    }
}
