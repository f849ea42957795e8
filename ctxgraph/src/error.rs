//! The errors of the store and its queries.

use std::path::PathBuf;

/// What can go wrong opening, writing or querying the graph.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store file was written by a different schema version of this crate.
    #[error(
        "context graph store {path} has schema version {found:?}, this build reads version {expected}; \
         there is no migration: set it aside (Store::set_aside) to start a fresh store, or read it \
         with the build that wrote it"
    )]
    SchemaMismatch {
        /// The store file.
        path: PathBuf,
        /// The version recorded in the file (`None`: a redb file that is not a context graph).
        found: Option<u64>,
        /// The version this build reads and writes.
        expected: u64,
    },
    /// A store could not be moved aside ([`Store::set_aside`](crate::Store::set_aside)).
    #[error("moving context graph store {path} aside: {source}")]
    SetAside {
        /// The file that could not be moved.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The embedded database (redb) failed: I/O, corruption, a full disk.
    #[error("context graph store: {0}")]
    Database(#[from] redb::Error),
    /// A stored record could not be decoded: the file is damaged.
    #[error("context graph store: corrupt {what} record: {source}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// The decoder's complaint.
        source: postcard::Error,
    },
    /// A stored record refers to something that is not there: the file is damaged.
    #[error("context graph store: {0}")]
    Dangling(String),
    /// A record could not be encoded.
    #[error("context graph store: cannot encode {what}: {source}")]
    Encode {
        /// Which kind of record.
        what: &'static str,
        /// The encoder's complaint.
        source: postcard::Error,
    },
    /// The ingest log could not be read or written.
    #[error("context graph ingest log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A segment file could not be read or written.
    #[error("context graph segment {path}: {source}")]
    Segment {
        /// The segment file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A segment file is damaged (a block fails its CRC, a directory does not parse).
    #[error("context graph store: corrupt segment: {0}")]
    CorruptSegment(String),
    /// A segment would hold more than 4 GiB of values (its memtable is bounded by
    /// `Config::segment_bytes`, so only a configuration far above the default gets
    /// here).
    #[error(
        "context graph store: a segment would hold {0} bytes of values, over 4 GiB; lower segment_bytes"
    )]
    SegmentTooLarge(usize),
    /// A writer panicked while holding the store; the store must be reopened.
    #[error("context graph store: a writer panicked; reopen the store")]
    Poisoned,
    /// The Flashback subject names nothing the graph knows.
    #[error("no process in the context graph matches {0}")]
    NotFound(String),
    /// Rendering to JSON failed.
    #[error("cannot render Flashback as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Database(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError
);

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
