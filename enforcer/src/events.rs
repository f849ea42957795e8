//! Decoding and rendering of the records the kernel programs put on the ring buffer.
//!
//! A record crosses a trust boundary (kernel memory shared with user space, written by
//! programs that could be replaced): every record is checked for its length, kind and
//! enumerations before it is believed, and a malformed one is an error, not a panic.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftwall_abi::{
    ARGS_CAPACITY, Decision, EventKind, ExecEvent, FileId, LifecycleEvent, LifecycleOp,
    PATH_CAPACITY,
};
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
    #[error("record has a path length of {0}, beyond its buffer")]
    PathLength(u16),
    #[error("lifecycle record has an invalid operation {0}")]
    LifecycleOp(u8),
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
    Lifecycle(LifecycleRecord),
}

/// A fork, exec or exit, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleRecord {
    pub op: LifecycleOp,
    pub tgid: u32,
    pub ppid: u32,
    pub boot_ns: u64,
    pub start_ns: u64,
    pub parent_start_ns: u64,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub exit_code: u32,
    pub file: FileId,
    /// The path the caller passed to `execve` (exec only).
    pub path: Option<String>,
    /// The new image's argv as the kernel saw it (exec only; may be cut short).
    pub argv: Vec<String>,
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
    /// `start_boottime` of the process.
    pub start_ns: u64,
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
                start_ns: ev.start_ns,
                path,
            }))
        }
        EventKind::Lifecycle => {
            let ev: LifecycleEvent = read_pod(bytes, kind)?;
            let op = LifecycleOp::from_u8(ev.op).ok_or(RecordError::LifecycleOp(ev.op))?;
            Ok(Record::Lifecycle(LifecycleRecord {
                op,
                tgid: ev.tgid,
                ppid: ev.ppid,
                boot_ns: ev.boot_ns,
                start_ns: ev.start_ns,
                parent_start_ns: ev.parent_start_ns,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                exit_code: ev.exit_code,
                file: ev.file,
                path: path_of(&ev.path, ev.path_len)?,
                argv: argv_of(&ev.args, ev.args_len)?,
            }))
        }
    }
}

/// The NUL-separated argument strings in a record's buffer.
fn argv_of(buf: &[u8; ARGS_CAPACITY], len: u16) -> Result<Vec<String>, RecordError> {
    let n = usize::from(len);
    if n > ARGS_CAPACITY {
        return Err(RecordError::PathLength(len));
    }
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The path in a record's buffer; `None` when empty.
fn path_of(buf: &[u8; PATH_CAPACITY], len: u16) -> Result<Option<String>, RecordError> {
    let n = usize::from(len);
    if n > PATH_CAPACITY {
        return Err(RecordError::PathLength(len));
    }
    // bpf_probe_read_kernel_str counts the NUL; d_path's length is trimmed by the
    // program. Either way no NUL belongs in the path.
    let bytes = &buf[..n];
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or(bytes);
    Ok((!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned()))
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

    /// Nanoseconds since the Unix epoch of a `boot_ns` stamp.
    pub fn epoch_ns(&self, boot_ns: u64) -> u64 {
        let t = self.boot_epoch + Duration::from_nanos(boot_ns);
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wall-clock time of a `boot_ns` stamp, RFC 3339 UTC to the microsecond.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        let t = UNIX_EPOCH + self.boot_epoch + Duration::from_nanos(boot_ns);
        humantime::format_rfc3339_micros(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: T is a repr(C) abi record; reading its bytes is what the kernel does.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
    }

    fn exec_event() -> ExecEvent {
        let mut path = [0u8; PATH_CAPACITY];
        path[..8].copy_from_slice(b"/bin/foo");
        ExecEvent {
            kind: EventKind::ExecDecision as u32,
            pid: 7,
            tgid: 7,
            ppid: 1,
            boot_ns: 5,
            uid: 0,
            gid: 0,
            cgroup_id: 9,
            workload: 1,
            decision: Decision::Deny as u8,
            _pad: 0,
            path_len: 8,
            file: FileId { dev: 1, ino: 2 },
            start_ns: 3,
            path,
        }
    }

    #[test]
    fn a_valid_exec_record_decodes() {
        match decode(&bytes_of(&exec_event())) {
            Ok(Record::Exec(r)) => {
                assert_eq!(r.path.as_deref(), Some("/bin/foo"));
                assert_eq!((r.tgid, r.start_ns, r.decision), (7, 3, Decision::Deny));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_records_are_refused_not_believed() {
        assert_eq!(decode(&[1, 0]), Err(RecordError::Short(2)));
        assert_eq!(decode(&[9, 0, 0, 0]), Err(RecordError::UnknownKind(9)));
        let good = bytes_of(&exec_event());
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(RecordError::Length { .. })
        ));
        let mut bad = exec_event();
        bad.decision = 7;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Decision(7)));
        let mut bad = exec_event();
        bad.path_len = PATH_CAPACITY as u16 + 1;
        assert!(matches!(
            decode(&bytes_of(&bad)),
            Err(RecordError::PathLength(_))
        ));
    }
}
