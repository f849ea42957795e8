//! The ingest log: what makes a batch durable before it is in a segment.
//!
//! [`Store::ingest`](crate::Store::ingest) appends each batch as one frame to a log
//! file beside the manifest and `fdatasync`s it — the acknowledgement: a sequential
//! write of the batch's compact encoding. The batch is then applied to the memtable
//! (`memtable.rs`), in memory only. When the memtable is sealed into a segment
//! (`segment.rs`) and the manifest names it, with the number of the last batch it
//! holds, the log is emptied. After a crash, opening the store replays the frames
//! after that batch into a new memtable. A frame that is cut short or fails its CRC
//! is the tail of a batch that was never acknowledged: it is cut off.
//!
//! A frame is `magic "DWL1" | batch number u64 | payload length u32 | CRC-32 of
//! number and payload u32 | payload`, little-endian; the payload is the batch's
//! events in postcard (varints), through serde remote definitions of the two
//! internally tagged enums (postcard cannot read those back as they are).
//! crc32fast is the CRC crate of the Rust ecosystem (SIMD, no unsafe in our code).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{
    AlertEvent, Credentials, Decision, Event, Exec, GapEvent, ProcessEvent, ProcessEventKind,
    ProcessKey,
};

const MAGIC: [u8; 4] = *b"DWL1";
const HEADER: usize = 4 + 8 + 4 + 4;
/// A frame larger than this is damage, not a batch.
const MAX_PAYLOAD: u32 = 1 << 30;

/// The log file of a store.
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
    /// The frame being written, reused from batch to batch (a batch's frame is a few
    /// hundred KiB; a new one each time was grown step by step and copied).
    frame: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the log at `path`.
    pub(crate) fn open(path: PathBuf) -> Result<Wal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| log_error(&path, source))?;
        let len = file
            .metadata()
            .map_err(|source| log_error(&path, source))?
            .len();
        Ok(Wal {
            file,
            path,
            len,
            frame: Vec::new(),
        })
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Calls `apply` on every intact frame numbered above `applied`, in order, and
    /// cuts the log after the last intact frame.
    pub(crate) fn replay(
        &mut self,
        applied: u64,
        mut apply: impl FnMut(u64, Vec<Event>) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let io = |source| log_error(&path, source);
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = io::BufReader::new(&self.file);
        let mut good = 0u64;
        let mut header = [0u8; HEADER];
        let mut payload = Vec::new();
        loop {
            if read_full(&mut reader, &mut header).map_err(io)? < HEADER {
                break;
            }
            let batch = u64::from_le_bytes(header[4..12].try_into().unwrap_or_default());
            let size = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
            let crc = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
            if header[..4] != MAGIC || size > MAX_PAYLOAD {
                break;
            }
            payload.resize(size as usize, 0);
            if read_full(&mut reader, &mut payload).map_err(io)? < payload.len() {
                break;
            }
            if checksum(batch, &payload) != crc {
                break;
            }
            let Ok(wire) = postcard::from_bytes::<Vec<WireEvent>>(&payload) else {
                break;
            };
            good += (HEADER + payload.len()) as u64;
            if batch > applied {
                apply(batch, wire.into_iter().map(|w| w.0).collect())?;
            }
        }
        drop(reader);
        if good != self.len {
            self.truncate(good)?;
        }
        Ok(())
    }

    /// Appends batch `number` and waits until it is on disk. On error the log is cut
    /// back to where it was, so a batch is in it only if this returned `Ok`.
    pub(crate) fn append(&mut self, number: u64, events: &[Event]) -> Result<()> {
        let wire: Vec<WireRef<'_>> = events.iter().map(WireRef).collect();
        // The header's size and checksum are filled in once the payload is there.
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame.extend_from_slice(&MAGIC);
        frame.extend_from_slice(&number.to_le_bytes());
        frame.extend_from_slice(&[0; 8]);
        let mut frame = postcard::to_extend(&wire, frame).map_err(|source| Error::Encode {
            what: "log frame",
            source,
        })?;
        let payload = frame.len() - HEADER;
        let size = u32::try_from(payload)
            .ok()
            .filter(|s| *s <= MAX_PAYLOAD)
            .ok_or_else(|| Error::Log {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "batch too large"),
            })?;
        let crc = checksum(number, &frame[HEADER..]);
        frame[HEADER - 8..HEADER - 4].copy_from_slice(&size.to_le_bytes());
        frame[HEADER - 4..HEADER].copy_from_slice(&crc.to_le_bytes());
        let written = (|| {
            self.file.seek(SeekFrom::Start(self.len))?;
            self.file.write_all(&frame)?;
            self.file.sync_data()
        })();
        let frame_len = frame.len() as u64;
        self.frame = frame;
        match written {
            Ok(()) => {
                self.len += frame_len;
                Ok(())
            }
            Err(source) => {
                // Best effort: a torn tail would also be cut by the next replay.
                let _ = self.file.set_len(self.len);
                Err(log_error(&self.path, source))
            }
        }
    }

    /// Cuts the log to `len` bytes, durably.
    pub(crate) fn truncate(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|source| log_error(&self.path, source))?;
        self.len = len;
        Ok(())
    }
}

/// The log file of the store at `store`.
pub(crate) fn log_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".log");
    PathBuf::from(name)
}

fn log_error(path: &Path, source: io::Error) -> Error {
    Error::Log {
        path: path.to_path_buf(),
        source,
    }
}

fn checksum(number: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&number.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An event to encode.
#[derive(Serialize)]
struct WireRef<'a>(#[serde(with = "EventDef")] &'a Event);

/// A decoded event.
#[derive(Deserialize)]
struct WireEvent(#[serde(with = "EventDef")] Event);

/// [`Event`] externally tagged, for postcard.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Event")]
enum EventDef {
    Process(#[serde(with = "ProcessEventDef")] ProcessEvent),
    Alert(AlertEvent),
    Gap(GapEvent),
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "ProcessEvent")]
struct ProcessEventDef {
    time_ns: u64,
    process: ProcessKey,
    #[serde(with = "ProcessEventKindDef")]
    kind: ProcessEventKind,
}

/// [`ProcessEventKind`] externally tagged, for postcard.
#[derive(Serialize, Deserialize)]
#[serde(remote = "ProcessEventKind")]
enum ProcessEventKindDef {
    Fork {
        parent: ProcessKey,
    },
    Exec(Exec),
    Exit {
        code: i32,
    },
    Credentials(Credentials),
    Listen {
        local: SocketAddr,
    },
    Connect {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Accept {
        listener: SocketAddr,
        local: SocketAddr,
        remote: SocketAddr,
    },
    UdpPeer {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Decision(Decision),
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::Wal;
    use crate::event::{Event, ProcessKey};

    fn batch(n: u32) -> Vec<Event> {
        let key = |tgid| ProcessKey {
            boot_id: 7,
            tgid,
            start_time_ns: u64::from(tgid),
        };
        vec![
            Event::fork(u64::from(n) * 10, key(1), key(100 + n)),
            Event::exit(u64::from(n) * 10 + 1, key(100 + n), 0),
        ]
    }

    fn replayed(wal: &mut Wal, applied: u64) -> Vec<(u64, Vec<Event>)> {
        let mut out = Vec::new();
        wal.replay(applied, |n, events| {
            out.push((n, events));
            Ok(())
        })
        .expect("replay");
        out
    }

    #[test]
    fn replay_returns_unapplied_batches_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("graph.redb.log");
        let mut wal = Wal::open(path.clone()).expect("open");
        for n in 1..=3 {
            wal.append(u64::from(n), &batch(n)).expect("append");
        }
        let intact = wal.len();
        // A crash in the middle of the fourth frame: half of it reached the disk.
        wal.append(4, &batch(4)).expect("append");
        let torn = intact + (wal.len() - intact) / 2;
        drop(wal);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(torn))
            .expect("tear");

        let mut wal = Wal::open(path.clone()).expect("reopen");
        let got = replayed(&mut wal, 1);
        assert_eq!(got, vec![(2, batch(2)), (3, batch(3))]);
        assert_eq!(wal.len(), intact, "the torn frame is cut off");
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(intact));
        // Appending goes on after the last intact frame.
        wal.append(4, &batch(4)).expect("append");
        assert_eq!(replayed(&mut wal, 3), vec![(4, batch(4))]);
    }

    #[test]
    fn a_frame_with_a_flipped_bit_ends_the_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("graph.redb.log");
        let mut wal = Wal::open(path.clone()).expect("open");
        wal.append(1, &batch(1)).expect("append");
        let first = wal.len();
        wal.append(2, &batch(2)).expect("append");
        drop(wal);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .expect("write");
        let mut wal = Wal::open(path).expect("reopen");
        assert_eq!(replayed(&mut wal, 0), vec![(1, batch(1))]);
        assert_eq!(wal.len(), first);
    }
}
