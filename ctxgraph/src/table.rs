//! Sorted tables: the on-disk form of a sealed segment's records and indexes.
//!
//! A table is a run of `(key, value)` byte strings in key order, written once and
//! never changed. Keys are tuples of integers in big-endian order (see
//! [`Key`]), so byte order is tuple order and one format serves every index.
//!
//! **Blocks.** Entries are packed into blocks of about [`BLOCK_BYTES`]; a key is
//! stored as the length of the prefix it shares with the previous key and the rest
//! (LevelDB's block format: neighbouring keys of a sorted run share most of their
//! bytes — the same process, the same second), with a restart point (a whole key)
//! every [`RESTART_INTERVAL`] entries. A block ends with its restart offsets, their
//! count and a CRC-32 of everything before. There is no general-purpose compression:
//! measured on this project's build machine (2 cores shared with other work), lz4
//! took ~100 µs to compress a 16 KiB block and ~20 µs to decompress it, zstd ~150 µs
//! and ~60 µs, for ratios of 1.8× and 3.4× on blocks of sorted (process, time,
//! sequence) keys; shared-prefix keys get most of lz4's ratio on these keys for
//! nothing, and a point read costs one `pread` and no decompression.
//!
//! **Index.** Each data block has an index entry (its last key → offset and length);
//! index entries are packed into index blocks of the same format, and the last key
//! of each index block with its location is the table's *top index*, kept in the
//! segment's directory and in memory. A point read or a seek is: the top index (in
//! memory), one index block, one data block — both through the [`BlockCache`].
//!
//! Why not a crate: the sorted-table crates of the ecosystem are the engines of a
//! search index or an LSM tree (tantivy's sstable, lsm-tree), bring their own file
//! abstractions, caches and compaction, and do not offer the reverse cursors the
//! (pid, time), (IP, time) and "last accept" look-ups need. This is ~400 lines.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use crate::cache::FastMap;
use crate::error::{Error, Result};

/// The size a block is cut at (a little more when the last entry is long).
pub(crate) const BLOCK_BYTES: usize = 16 << 10;
/// A whole key every this many entries.
const RESTART_INTERVAL: usize = 16;

/// A table key: integers in big-endian order, so that byte order is tuple order.
#[derive(Clone, Copy)]
pub(crate) struct Key<const N: usize>(pub [u8; N]);

impl<const N: usize> Key<N> {
    /// The key of these 64-bit parts (`N` must be 8 × their number).
    pub(crate) fn of(parts: &[u64]) -> Key<N> {
        let mut k = [0u8; N];
        for (i, p) in parts.iter().enumerate() {
            k[i * 8..i * 8 + 8].copy_from_slice(&p.to_be_bytes());
        }
        Key(k)
    }
}

/// Part `i` (64-bit) of a key.
pub(crate) fn part(key: &[u8], i: usize) -> u64 {
    key.get(i * 8..i * 8 + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*at`, moving `*at` past it.
pub(crate) fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Where a block is in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    pub offset: u64,
    pub len: u32,
}

impl Handle {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.offset);
        put_varint(out, u64::from(self.len));
    }

    pub(crate) fn decode(bytes: &[u8], at: &mut usize) -> Option<Handle> {
        let offset = get_varint(bytes, at)?;
        let len = u32::try_from(get_varint(bytes, at)?).ok()?;
        Some(Handle { offset, len })
    }
}

/// Builds one block.
#[derive(Default)]
struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last_key: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.count.is_multiple_of(RESTART_INTERVAL) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.count += 1;
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 8
    }

    /// Ends the block (restart points, their count, CRC) and returns its bytes;
    /// [`BlockBuilder::reset`] starts the next one in the same buffer.
    fn finish(&mut self) -> &[u8] {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    /// Empties the builder, keeping its buffers' capacity.
    fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.count = 0;
    }
}

/// A decoded block: keys rebuilt whole, values in place.
pub(crate) struct Block {
    data: Vec<u8>,
    keys: Vec<u8>,
    /// (end of key in `keys`, start of value in `data`, end of value).
    entries: Vec<(u32, u32, u32)>,
}

impl Block {
    /// Decodes a block read from disk, checking its CRC.
    pub(crate) fn decode(data: Vec<u8>) -> std::result::Result<Block, &'static str> {
        if data.len() < 8 {
            return Err("block too short");
        }
        let body = data.len() - 4;
        let crc = u32::from_le_bytes(data[body..].try_into().unwrap_or_default());
        if crc32fast::hash(&data[..body]) != crc {
            return Err("block CRC mismatch");
        }
        let restarts =
            u32::from_le_bytes(data[body - 4..body].try_into().unwrap_or_default()) as usize;
        let end = body
            .checked_sub(4 + 4 * restarts)
            .ok_or("block restart array too long")?;
        let mut keys = Vec::with_capacity(end);
        let mut entries = Vec::new();
        let mut at = 0;
        let mut prev_start = 0usize;
        while at < end {
            let (Some(shared), Some(unshared), Some(vlen)) = (
                get_varint(&data, &mut at),
                get_varint(&data, &mut at),
                get_varint(&data, &mut at),
            ) else {
                return Err("block entry header cut");
            };
            let (shared, unshared, vlen) = (shared as usize, unshared as usize, vlen as usize);
            let prev_len = keys.len() - prev_start;
            if shared > prev_len || at + unshared + vlen > end {
                return Err("block entry out of bounds");
            }
            let start = keys.len();
            keys.extend_from_within(prev_start..prev_start + shared);
            keys.extend_from_slice(&data[at..at + unshared]);
            at += unshared;
            entries.push((keys.len() as u32, at as u32, (at + vlen) as u32));
            at += vlen;
            prev_start = start;
        }
        Ok(Block {
            data,
            keys,
            entries,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.entries[i - 1].0 as usize
        };
        &self.keys[start..self.entries[i].0 as usize]
    }

    pub(crate) fn value(&self, i: usize) -> &[u8] {
        let (_, from, to) = self.entries[i];
        &self.data[from as usize..to as usize]
    }

    /// The first entry whose key is ≥ `key` (`len()` if none).
    fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The first entry whose key is > `key`.
    fn upper_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn memory(&self) -> usize {
        self.data.capacity() + self.keys.capacity() + 12 * self.entries.capacity() + 64
    }
}

/// Writes the blocks of tables to a segment file being built (see `segment.rs`).
pub(crate) struct TableWriter {
    data: BlockBuilder,
    index: BlockBuilder,
    /// Last key of the data block being built.
    last_key: Vec<u8>,
    top: Vec<(Vec<u8>, Handle)>,
    entries: u64,
    raw_bytes: u64,
    /// Where blocks are cut ([`BLOCK_BYTES`] outside tests).
    block_bytes: usize,
}

/// What a finished table leaves in the segment's directory.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableDir {
    pub entries: u64,
    /// Bytes of keys and values, before prefix sharing.
    pub raw_bytes: u64,
    /// Last key of each index block → where the index block is.
    pub top: Vec<(Vec<u8>, Handle)>,
}

/// Where blocks go: the segment file's buffer and its running length.
pub(crate) trait BlockSink {
    /// Writes `block` and returns where it went.
    fn put(&mut self, block: &[u8]) -> Result<Handle>;
}

impl TableWriter {
    pub(crate) fn new() -> TableWriter {
        TableWriter::with_block_bytes(BLOCK_BYTES)
    }

    /// A writer that cuts its blocks at `block_bytes` (tests use small blocks to get
    /// many index blocks out of a small table).
    pub(crate) fn with_block_bytes(block_bytes: usize) -> TableWriter {
        TableWriter {
            block_bytes,
            data: BlockBuilder::default(),
            index: BlockBuilder::default(),
            last_key: Vec::new(),
            top: Vec::new(),
            entries: 0,
            raw_bytes: 0,
        }
    }

    /// Adds an entry; keys must come in strictly increasing order.
    pub(crate) fn add(
        &mut self,
        sink: &mut impl BlockSink,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        debug_assert!(self.entries == 0 || key > self.last_key.as_slice());
        self.data.add(key, value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        self.raw_bytes += (key.len() + value.len()) as u64;
        if self.data.size() >= self.block_bytes {
            self.flush_data(sink)?;
        }
        Ok(())
    }

    fn flush_data(&mut self, sink: &mut impl BlockSink) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let handle = sink.put(self.data.finish())?;
        self.data.reset();
        let mut value = Vec::with_capacity(12);
        handle.encode(&mut value);
        let last = std::mem::take(&mut self.last_key);
        self.index.add(&last, &value);
        if self.index.size() >= self.block_bytes {
            let handle = sink.put(self.index.finish())?;
            self.index.reset();
            self.top.push((last.clone(), handle));
        }
        self.last_key = last;
        Ok(())
    }

    pub(crate) fn finish(mut self, sink: &mut impl BlockSink) -> Result<TableDir> {
        self.flush_data(sink)?;
        if !self.index.is_empty() {
            let handle = sink.put(self.index.finish())?;
            self.index.reset();
            self.top.push((self.last_key.clone(), handle));
        }
        Ok(TableDir {
            entries: self.entries,
            raw_bytes: self.raw_bytes,
            top: self.top,
        })
    }
}

/// Decoded blocks shared by all segments, bounded by bytes: two generations (the
/// young one fills; when it holds half the budget the old one is dropped and the
/// young one takes its place; a hit in the old one is promoted), like the writer's
/// memos in `cache.rs`.
pub(crate) struct BlockCache {
    inner: Mutex<CacheGens>,
    half: usize,
}

#[derive(Default)]
struct CacheGens {
    young: FastMap<(u64, u64), Arc<Block>>,
    young_bytes: usize,
    old: FastMap<(u64, u64), Arc<Block>>,
}

impl BlockCache {
    pub(crate) fn new(budget: usize) -> BlockCache {
        BlockCache {
            inner: Mutex::new(CacheGens::default()),
            half: (budget / 2).max(BLOCK_BYTES),
        }
    }

    fn get(&self, key: (u64, u64)) -> Option<Arc<Block>> {
        let mut g = self.inner.lock().ok()?;
        if let Some(b) = g.young.get(&key) {
            return Some(b.clone());
        }
        let b = g.old.remove(&key)?;
        Self::put(&mut g, self.half, key, b.clone());
        Some(b)
    }

    fn insert(&self, key: (u64, u64), block: Arc<Block>) {
        if let Ok(mut g) = self.inner.lock() {
            Self::put(&mut g, self.half, key, block);
        }
    }

    fn put(g: &mut CacheGens, half: usize, key: (u64, u64), block: Arc<Block>) {
        let size = block.memory();
        if g.young_bytes + size > half {
            g.old = std::mem::take(&mut g.young);
            g.young_bytes = 0;
        }
        g.young_bytes += size;
        g.young.insert(key, block);
    }

    /// Forgets the blocks of file `file_id` (a segment that was deleted or rewritten).
    pub(crate) fn forget_file(&self, file_id: u64) {
        if let Ok(mut g) = self.inner.lock() {
            g.young.retain(|k, _| k.0 != file_id);
            g.old.retain(|k, _| k.0 != file_id);
            g.young_bytes = g.young.values().map(|b| b.memory()).sum();
        }
    }
}

/// A table of an open segment file.
pub(crate) struct TableReader {
    file: Arc<File>,
    file_id: u64,
    dir: TableDir,
    cache: Arc<BlockCache>,
    what: Arc<str>,
}

impl TableReader {
    pub(crate) fn new(
        file: Arc<File>,
        file_id: u64,
        dir: TableDir,
        cache: Arc<BlockCache>,
        what: Arc<str>,
    ) -> TableReader {
        TableReader {
            file,
            file_id,
            dir,
            cache,
            what,
        }
    }

    pub(crate) fn entries(&self) -> u64 {
        self.dir.entries
    }

    fn block(&self, handle: Handle) -> Result<Arc<Block>> {
        let key = (self.file_id, handle.offset);
        if let Some(b) = self.cache.get(key) {
            return Ok(b);
        }
        let mut buf = vec![0u8; handle.len as usize];
        self.file
            .read_exact_at(&mut buf, handle.offset)
            .map_err(|source| Error::Segment {
                path: self.what.to_string(),
                source,
            })?;
        let block = Arc::new(Block::decode(buf).map_err(|why| {
            Error::CorruptSegment(format!("{} at {}: {why}", self.what, handle.offset))
        })?);
        self.cache.insert(key, block.clone());
        Ok(block)
    }

    fn index_block(&self, top: usize) -> Result<Arc<Block>> {
        self.block(self.dir.top[top].1)
    }

    fn data_block(&self, index: &Block, i: usize) -> Result<Arc<Block>> {
        let mut at = 0;
        let handle = Handle::decode(index.value(i), &mut at)
            .ok_or_else(|| Error::CorruptSegment(format!("{}: bad block handle", self.what)))?;
        self.block(handle)
    }

    /// A cursor before the first entry (not valid until positioned).
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor {
            table: self,
            top: 0,
            index: None,
            ii: 0,
            data: None,
            di: 0,
        }
    }

    /// The value of `key`, if it is in the table.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut c = self.cursor();
        c.seek_ge(key)?;
        Ok(match c.entry() {
            Some((k, v)) if k == key => Some(v.to_vec()),
            _ => None,
        })
    }

    /// Checks every block of the table (CRC, order); returns the number of entries.
    pub(crate) fn verify(&self) -> Result<u64> {
        let mut c = self.cursor();
        c.first()?;
        let mut n = 0u64;
        let mut last: Option<Vec<u8>> = None;
        while let Some((k, _)) = c.entry() {
            if last.as_deref().is_some_and(|l| l >= k) {
                return Err(Error::CorruptSegment(format!(
                    "{}: keys out of order",
                    self.what
                )));
            }
            last = Some(k.to_vec());
            n += 1;
            c.next()?;
        }
        if n != self.dir.entries {
            return Err(Error::CorruptSegment(format!(
                "{}: {n} entries, directory says {}",
                self.what, self.dir.entries
            )));
        }
        Ok(n)
    }
}

/// A position in a table: moves forward and backward across blocks.
pub(crate) struct Cursor<'t> {
    table: &'t TableReader,
    top: usize,
    index: Option<Arc<Block>>,
    ii: usize,
    data: Option<Arc<Block>>,
    di: usize,
}

impl Cursor<'_> {
    /// The entry at the cursor, or `None` when it is off either end.
    pub(crate) fn entry(&self) -> Option<(&[u8], &[u8])> {
        let d = self.data.as_ref()?;
        (self.di < d.len()).then(|| (d.key(self.di), d.value(self.di)))
    }

    fn invalidate(&mut self) {
        self.data = None;
        self.index = None;
    }

    /// Loads data block `ii` of index block `top`.
    fn load(&mut self, top: usize, ii: usize) -> Result<()> {
        if self.index.is_none() || self.top != top {
            self.index = Some(self.table.index_block(top)?);
            self.top = top;
        }
        let index = self.index.as_ref().map(Arc::clone);
        if let Some(index) = index {
            self.ii = ii;
            self.data = Some(self.table.data_block(&index, ii)?);
        }
        Ok(())
    }

    /// Moves to the first entry ≥ `key` (off the end if none).
    pub(crate) fn seek_ge(&mut self, key: &[u8]) -> Result<()> {
        let top = &self.table.dir.top;
        let t = top.partition_point(|(last, _)| last.as_slice() < key);
        if t >= top.len() {
            self.invalidate();
            return Ok(());
        }
        let index = self.table.index_block(t)?;
        let ii = index.lower_bound(key);
        if ii >= index.len() {
            self.invalidate();
            return Ok(());
        }
        self.top = t;
        self.index = Some(index);
        self.load(t, ii)?;
        if let Some(d) = &self.data {
            self.di = d.lower_bound(key);
        }
        Ok(())
    }

    /// Moves to the last entry ≤ `key` (off the start if none).
    pub(crate) fn seek_le(&mut self, key: &[u8]) -> Result<()> {
        let top = &self.table.dir.top;
        // The first block whose last key is > key holds the first entry > key.
        let t = top.partition_point(|(last, _)| last.as_slice() <= key);
        if t >= top.len() {
            return self.last();
        }
        let index = self.table.index_block(t)?;
        let ii = index.upper_bound(key);
        self.top = t;
        self.index = Some(index);
        self.load(t, ii.min(self.index.as_ref().map_or(1, |i| i.len()) - 1))?;
        if let Some(d) = &self.data {
            self.di = d.upper_bound(key);
        }
        // Step back from the first entry > key.
        self.prev()
    }

    /// Moves to the first entry.
    pub(crate) fn first(&mut self) -> Result<()> {
        if self.table.dir.top.is_empty() {
            self.invalidate();
            return Ok(());
        }
        self.load(0, 0)?;
        self.di = 0;
        Ok(())
    }

    /// Moves to the last entry.
    pub(crate) fn last(&mut self) -> Result<()> {
        let Some(t) = self.table.dir.top.len().checked_sub(1) else {
            self.invalidate();
            return Ok(());
        };
        let index = self.table.index_block(t)?;
        let ii = index.len().saturating_sub(1);
        self.top = t;
        self.index = Some(index);
        self.load(t, ii)?;
        self.di = self.data.as_ref().map_or(0, |d| d.len().saturating_sub(1));
        Ok(())
    }

    /// Moves to the next entry (off the end after the last).
    pub(crate) fn next(&mut self) -> Result<()> {
        let Some(d) = &self.data else { return Ok(()) };
        if self.di + 1 < d.len() {
            self.di += 1;
            return Ok(());
        }
        let index_len = self.index.as_ref().map_or(0, |i| i.len());
        if self.ii + 1 < index_len {
            self.load(self.top, self.ii + 1)?;
            self.di = 0;
        } else if self.top + 1 < self.table.dir.top.len() {
            self.index = None;
            self.load(self.top + 1, 0)?;
            self.di = 0;
        } else {
            self.di = d.len();
        }
        Ok(())
    }

    /// Moves to the previous entry (off the start before the first).
    pub(crate) fn prev(&mut self) -> Result<()> {
        if self.data.is_none() {
            return Ok(());
        }
        if self.di > 0 {
            self.di -= 1;
            return Ok(());
        }
        if self.ii > 0 {
            self.load(self.top, self.ii - 1)?;
        } else if self.top > 0 {
            self.index = None;
            let t = self.top - 1;
            let index = self.table.index_block(t)?;
            let ii = index.len().saturating_sub(1);
            self.index = Some(index);
            self.top = t;
            self.load(t, ii)?;
        } else {
            self.invalidate();
            return Ok(());
        }
        self.di = self.data.as_ref().map_or(0, |d| d.len().saturating_sub(1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct VecSink(Vec<u8>);

    impl BlockSink for VecSink {
        fn put(&mut self, block: &[u8]) -> Result<Handle> {
            let offset = self.0.len() as u64;
            self.0.extend_from_slice(block);
            Ok(Handle {
                offset,
                len: block.len() as u32,
            })
        }
    }

    fn table(n: u64, value_len: usize) -> (tempfile::TempDir, TableReader) {
        let mut sink = VecSink(Vec::new());
        // Small blocks: a table this size spans thousands of data blocks and dozens of
        // index blocks (with 16 KiB blocks one index block would index all of them).
        let mut w = TableWriter::with_block_bytes(512);
        for i in 0..n {
            let key = Key::<16>::of(&[i / 3, i * 7]);
            let value = vec![(i % 251) as u8; value_len];
            w.add(&mut sink, &key.0, &value).expect("add");
        }
        let dir = w.finish(&mut sink).expect("finish");
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("t");
        std::fs::write(&path, &sink.0).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let cache = Arc::new(BlockCache::new(1 << 20));
        (tmp, TableReader::new(file, 1, dir, cache, "test".into()))
    }

    #[test]
    fn a_table_seeks_and_walks_both_ways_across_blocks() {
        // Enough entries for many data blocks and several index blocks.
        let n = 60_000;
        let (_tmp, t) = table(n, 20);
        assert!(t.dir.top.len() > 1, "several index blocks");
        assert_eq!(t.verify().expect("verify"), n);
        let key = |i: u64| Key::<16>::of(&[i / 3, i * 7]).0;
        // Point reads.
        for i in [0, 1, 777, 31_999, n - 1] {
            assert_eq!(
                t.get(&key(i)).expect("get"),
                Some(vec![(i % 251) as u8; 20])
            );
        }
        assert_eq!(t.get(&Key::<16>::of(&[5, 1]).0).expect("get"), None);
        // Forward walk from a seek.
        let mut c = t.cursor();
        c.seek_ge(&Key::<16>::of(&[100, 0]).0).expect("seek");
        let mut i = 300;
        while let Some((k, _)) = c.entry() {
            assert_eq!(k, key(i));
            i += 1;
            c.next().expect("next");
        }
        assert_eq!(i, n);
        // Backward walk from a seek between keys.
        let mut c = t.cursor();
        c.seek_le(&Key::<16>::of(&[10_000, 0]).0).expect("seek");
        let mut i = 29_999;
        while let Some((k, _)) = c.entry() {
            assert_eq!(k, key(i), "entry {i}");
            if i == 0 {
                c.prev().expect("prev");
                break;
            }
            i -= 1;
            c.prev().expect("prev");
        }
        assert_eq!(i, 0);
        assert!(c.entry().is_none());
        // Off both ends.
        let mut c = t.cursor();
        c.seek_ge(&Key::<16>::of(&[u64::MAX, 0]).0).expect("seek");
        assert!(c.entry().is_none());
        c.seek_le(&Key::<16>::of(&[0, 0]).0).expect("seek");
        assert_eq!(c.entry().map(|e| e.0.to_vec()), Some(key(0).to_vec()));
        c.seek_le(&[0u8; 3]).expect("seek");
        assert!(c.entry().is_none());
        c.seek_le(&[0xff; 16]).expect("seek");
        assert_eq!(c.entry().map(|e| e.0.to_vec()), Some(key(n - 1).to_vec()));
    }

    #[test]
    fn an_empty_table_has_no_entries() {
        let (_tmp, t) = table(0, 1);
        let mut c = t.cursor();
        c.first().expect("first");
        assert!(c.entry().is_none());
        c.seek_le(&[0xff; 16]).expect("seek");
        assert!(c.entry().is_none());
        assert_eq!(t.get(&[0; 16]).expect("get"), None);
    }

    #[test]
    fn a_damaged_block_is_refused() {
        let mut sink = VecSink(Vec::new());
        let mut w = TableWriter::new();
        for i in 0..100u64 {
            w.add(&mut sink, &Key::<8>::of(&[i]).0, b"value")
                .expect("add");
        }
        let dir = w.finish(&mut sink).expect("finish");
        sink.0[10] ^= 0x01;
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("t");
        std::fs::write(&path, &sink.0).expect("write");
        let file = Arc::new(File::open(&path).expect("open"));
        let t = TableReader::new(file, 1, dir, Arc::new(BlockCache::new(1 << 20)), "t".into());
        assert!(matches!(
            t.get(&Key::<8>::of(&[3]).0),
            Err(Error::CorruptSegment(_))
        ));
    }
}
