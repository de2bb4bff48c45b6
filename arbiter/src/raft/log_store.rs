//! The Raft log and vote of one replica, durable on local disk, in pure Rust.
//!
//! Raft's safety rests on a replica never forgetting what it acknowledged: an entry it told the
//! leader it holds, or the vote it granted. So every change is a record appended to one file and
//! `fsync`ed before openraft hears that it is done (the `LogFlushed` callback, or the return of
//! `save_vote`). The format is deliberately plain:
//!
//! ```text
//! file   := MAGIC record*
//! record := len:u32le crc32(payload):u32le payload      (payload: MessagePack of a Record)
//! Record := Append(entries) | Truncate{since} | Purge{upto} | Vote(vote) | Committed(log id)
//! ```
//!
//! Opening replays the file into memory. A crash can leave the last record half written: a
//! record that runs past the end of the file, or the last one whose checksum fails, is such a
//! torn tail; it was never acknowledged, so it is cut off. A bad checksum with more records behind
//! it cannot come from a crash and is reported as corruption instead of being skipped.
//!
//! Purged and overwritten entries stay in the file until it is compacted: the live state is
//! written to a temporary file, fsynced, renamed over the log, and the directory fsynced, so at
//! every instant either the old or the new file is complete.
//!
//! Reads never touch the disk: an in-memory index (a `BTreeMap` by log index) mirrors the file.

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The name of the log file inside a replica's data directory.
pub const LOG_FILE_NAME: &str = "raft-log.bin";
/// Where a compaction writes before it renames over [`LOG_FILE_NAME`].
const COMPACT_FILE_NAME: &str = "raft-log.bin.compact";
/// Identifies the file format; bump the digit when the format changes.
const MAGIC: &[u8; 8] = b"ENTRLOG1";
/// Length and checksum in front of every record.
const RECORD_HEADER: usize = 8;
/// No record is ever this big; a length above it is garbage (a torn or corrupt header).
const MAX_RECORD_BYTES: usize = 1 << 30;
/// Entries per `Append` record when a compaction rewrites the log.
const COMPACT_BATCH: usize = 512;

/// The path of the log file in `dir`.
pub fn log_file_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE_NAME)
}

/// When the log file is rewritten without its dead records.
#[derive(Debug, Clone)]
pub struct LogStoreOptions {
    /// Compact once the file exceeds this size and has doubled since the last compaction (the
    /// second condition keeps a log whose live part is big from being rewritten on every write).
    pub compact_bytes: u64,
    /// After a purge, compact if the file exceeds this size.
    pub compact_after_purge_bytes: u64,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions { compact_bytes: 64 << 20, compact_after_purge_bytes: 1 << 20 }
    }
}

/// One change to the log, as written to the file.
#[derive(Serialize)]
#[serde(bound = "")]
enum RecordRef<'a, C: RaftTypeConfig> {
    Append(&'a [C::Entry]),
    Truncate { since: u64 },
    Purge { upto: &'a LogId<C::NodeId> },
    Vote(&'a Vote<C::NodeId>),
    Committed(&'a Option<LogId<C::NodeId>>),
}

/// One change to the log, as read back (the owned twin of [`RecordRef`]).
#[derive(Deserialize)]
#[serde(bound = "")]
enum Record<C: RaftTypeConfig> {
    Append(Vec<C::Entry>),
    Truncate { since: u64 },
    Purge { upto: LogId<C::NodeId> },
    Vote(Vote<C::NodeId>),
    Committed(Option<LogId<C::NodeId>>),
}

/// What the file says, in memory.
struct LogIndex<C: RaftTypeConfig> {
    entries: BTreeMap<u64, C::Entry>,
    vote: Option<Vote<C::NodeId>>,
    committed: Option<LogId<C::NodeId>>,
    last_purged: Option<LogId<C::NodeId>>,
}

impl<C: RaftTypeConfig> LogIndex<C> {
    fn new() -> Self {
        LogIndex { entries: BTreeMap::new(), vote: None, committed: None, last_purged: None }
    }

    fn append(&mut self, entries: impl IntoIterator<Item = C::Entry>) {
        for entry in entries {
            self.entries.insert(entry.get_log_id().index, entry);
        }
    }

    fn truncate(&mut self, since: u64) {
        self.entries.split_off(&since);
    }

    fn purge(&mut self, upto: LogId<C::NodeId>) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        if self.last_purged.as_ref() < Some(&upto) {
            self.last_purged = Some(upto);
        }
    }

    fn apply(&mut self, record: Record<C>) {
        match record {
            Record::Append(entries) => self.append(entries),
            Record::Truncate { since } => self.truncate(since),
            Record::Purge { upto } => self.purge(upto),
            Record::Vote(vote) => self.vote = Some(vote),
            Record::Committed(committed) => self.committed = committed,
        }
    }

    fn last_log_id(&self) -> Option<LogId<C::NodeId>> {
        match self.entries.last_key_value() {
            Some((_, entry)) => Some(entry.get_log_id().clone()),
            None => self.last_purged.clone(),
        }
    }
}

/// The open log file.
struct LogFile {
    dir: PathBuf,
    file: File,
    len: u64,
    /// The size right after the last compaction (or open).
    compacted_len: u64,
    options: LogStoreOptions,
}

/// Whether a record must be on disk before the operation counts as done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Sync,
    /// The committed index: losing it in a crash only means openraft re-learns it from the
    /// leader, so it rides along with the next synced record.
    Lazy,
}

/// When the log asks itself whether to compact.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CompactCheck {
    Growth,
    AfterPurge,
}

/// The durable Raft log of one replica. Cloning gives another handle to the same log.
pub struct LogStore<C: RaftTypeConfig> {
    index: Arc<Mutex<LogIndex<C>>>,
    file: Arc<Mutex<LogFile>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore { index: self.index.clone(), file: self.file.clone() }
    }
}

/// Reads the log for openraft's replication tasks while the core keeps writing.
pub struct LogReader<C: RaftTypeConfig> {
    index: Arc<Mutex<LogIndex<C>>>,
}

fn lock<'a, T, NID: openraft::NodeId>(mutex: &'a Mutex<T>) -> Result<MutexGuard<'a, T>, StorageError<NID>> {
    // A poisoned lock means a panic interrupted a change half way; the index can no longer be
    // trusted to mirror the file, so the replica stops instead of guessing.
    mutex.lock().map_err(|_| {
        let e = io::Error::other("raft log lock poisoned by an earlier panic");
        StorageIOError::read_logs(&e).into()
    })
}

fn encode_record<C: RaftTypeConfig>(record: &RecordRef<'_, C>) -> io::Result<Vec<u8>> {
    let payload = rmp_serde::to_vec_named(record).map_err(io::Error::other)?;
    if payload.len() > MAX_RECORD_BYTES {
        return Err(io::Error::other(format!("log record of {} bytes is too large", payload.len())));
    }
    let mut framed = Vec::with_capacity(RECORD_HEADER + payload.len());
    framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    framed.extend_from_slice(&payload);
    Ok(framed)
}

/// Makes a rename or a file creation in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    /// Opens (or creates) the log in `dir`, replaying it into memory. Blocks on file I/O.
    pub fn open(dir: &Path, options: LogStoreOptions) -> Result<Self, StorageError<C::NodeId>> {
        Self::open_io(dir, options).map_err(|e| StorageIOError::read_logs(&e).into())
    }

    fn open_io(dir: &Path, options: LogStoreOptions) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // A compaction that did not reach its rename left the old log intact; its leftover is
        // incomplete by definition.
        match std::fs::remove_file(dir.join(COMPACT_FILE_NAME)) {
            Ok(()) => tracing::warn!(dir = %dir.display(), "removed an unfinished raft log compaction"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let path = log_file_path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if bytes.len() < MAGIC.len() {
            // Missing, or a creation cut short before its magic was synced: nothing was ever
            // acknowledged from this file.
            Self::create_empty(&path, dir)?;
            let file = OpenOptions::new().append(true).open(&path)?;
            let len = MAGIC.len() as u64;
            return Ok(Self::assemble(
                LogIndex::new(),
                LogFile { dir: dir.to_owned(), file, len, compacted_len: len, options },
            ));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an entente raft log (bad magic)", path.display()),
            ));
        }
        let (index, valid_len) = Self::replay(&bytes, &path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - valid_len,
                "raft log ends in a torn record (a crash during a write); dropping it"
            );
            file.set_len(valid_len as u64)?;
            file.sync_all()?;
        }
        let len = valid_len as u64;
        Ok(Self::assemble(index, LogFile { dir: dir.to_owned(), file, len, compacted_len: len, options }))
    }

    fn assemble(index: LogIndex<C>, file: LogFile) -> Self {
        LogStore { index: Arc::new(Mutex::new(index)), file: Arc::new(Mutex::new(file)) }
    }

    fn create_empty(path: &Path, dir: &Path) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        sync_dir(dir)
    }

    /// Replays the records after the magic; returns the index and how many bytes of the file
    /// are valid (less than its length when the tail is torn).
    fn replay(bytes: &[u8], path: &Path) -> io::Result<(LogIndex<C>, usize)> {
        let mut index = LogIndex::new();
        let mut pos = MAGIC.len();
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if rest.len() < RECORD_HEADER {
                break;
            }
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            let end = RECORD_HEADER + len;
            if len > MAX_RECORD_BYTES || end > rest.len() {
                break;
            }
            let payload = &rest[RECORD_HEADER..end];
            if crc32fast::hash(payload) != crc {
                if end == rest.len() {
                    break;
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: checksum mismatch in the record at byte {pos}, with records after it", path.display()),
                ));
            }
            let record: Record<C> = rmp_serde::from_slice(payload).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: undecodable record at byte {pos}: {e}", path.display()),
                )
            })?;
            index.apply(record);
            pos += end;
        }
        Ok((index, pos))
    }

    /// Writes `record` (already framed) in the blocking pool, fsyncs it when asked, and compacts
    /// when the file has grown enough.
    async fn write(&self, framed: Vec<u8>, durability: Durability, check: CompactCheck) -> io::Result<()> {
        let file = self.file.clone();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut log = file.lock().map_err(|_| io::Error::other("raft log file lock poisoned"))?;
            if let Err(e) = log.file.write_all(&framed) {
                // Cut off whatever part of the record made it, so that a later record does not
                // land behind garbage (which replay would rightly call corruption).
                let valid = log.len;
                if let Err(cut) = log.file.set_len(valid) {
                    tracing::error!(error = %cut, "cannot cut a partly written raft log record");
                }
                return Err(e);
            }
            log.len += framed.len() as u64;
            if durability == Durability::Sync {
                log.file.sync_data()?;
            }
            let compact = match check {
                CompactCheck::Growth => log.len > log.options.compact_bytes && log.len > 2 * log.compacted_len,
                CompactCheck::AfterPurge => log.len > log.options.compact_after_purge_bytes,
            };
            if compact {
                Self::compact(&mut log, &index)?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Rewrites the file with the live state only. Called with the file lock held; takes the
    /// index lock only while encoding.
    fn compact(log: &mut LogFile, index: &Mutex<LogIndex<C>>) -> io::Result<()> {
        let before = log.len;
        let tmp_path = log.dir.join(COMPACT_FILE_NAME);
        let mut content = MAGIC.to_vec();
        {
            let index = index.lock().map_err(|_| io::Error::other("raft log index lock poisoned"))?;
            if let Some(vote) = &index.vote {
                content.extend(encode_record::<C>(&RecordRef::Vote(vote))?);
            }
            if index.committed.is_some() {
                content.extend(encode_record::<C>(&RecordRef::Committed(&index.committed))?);
            }
            if let Some(upto) = &index.last_purged {
                content.extend(encode_record::<C>(&RecordRef::Purge { upto })?);
            }
            let entries: Vec<C::Entry> = index.entries.values().cloned().collect();
            for batch in entries.chunks(COMPACT_BATCH) {
                content.extend(encode_record::<C>(&RecordRef::Append(batch))?);
            }
        }
        {
            let mut tmp = File::create(&tmp_path)?;
            tmp.write_all(&content)?;
            tmp.sync_all()?;
        }
        let path = log_file_path(&log.dir);
        std::fs::rename(&tmp_path, &path)?;
        sync_dir(&log.dir)?;
        log.file = OpenOptions::new().append(true).open(&path)?;
        log.len = content.len() as u64;
        log.compacted_len = log.len;
        tracing::debug!(before, after = log.len, "compacted the raft log");
        Ok(())
    }

    /// Appends entries and returns once they are on disk. `RaftLogStorage::append` is this plus
    /// the callback; it is public for callers (and tests) that have no callback to give.
    pub async fn append_durable(&mut self, entries: Vec<C::Entry>) -> Result<(), StorageError<C::NodeId>> {
        if entries.is_empty() {
            return Ok(());
        }
        let framed = encode_record::<C>(&RecordRef::Append(&entries)).map_err(|e| StorageIOError::write_logs(&e))?;
        // The index learns the entries before they are durable: openraft may read what it just
        // appended (to replicate it) but counts it as stored only once the callback fires.
        lock(&self.index)?.append(entries);
        self.write(framed, Durability::Sync, CompactCheck::Growth)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// The size of the log file now, for tests and metrics.
    pub fn file_len(&self) -> Result<u64, StorageError<C::NodeId>> {
        Ok(lock(&self.file)?.len)
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        Ok(lock(&self.index)?.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        Ok(lock(&self.index)?.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let index = lock(&self.index)?;
        Ok(LogState { last_purged_log_id: index.last_purged.clone(), last_log_id: index.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { index: self.index.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let framed = encode_record::<C>(&RecordRef::Vote(vote)).map_err(|e| StorageIOError::write_vote(&e))?;
        lock(&self.index)?.vote = Some(vote.clone());
        // A vote must survive a crash before it is granted, or a replica could vote twice in
        // one term: `save_vote` returns only after the fsync.
        self.write(framed, Durability::Sync, CompactCheck::Growth)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(lock(&self.index)?.vote.clone())
    }

    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> Result<(), StorageError<C::NodeId>> {
        let framed =
            encode_record::<C>(&RecordRef::Committed(&committed)).map_err(|e| StorageIOError::write_logs(&e))?;
        lock(&self.index)?.committed = committed;
        self.write(framed, Durability::Lazy, CompactCheck::Growth)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(lock(&self.index)?.committed.clone())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        match self.append_durable(entries).await {
            Ok(()) => {
                // Only now, with the entries fsynced, may openraft count them as stored (and a
                // follower acknowledge them to the leader).
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let since = log_id.index;
        let framed = encode_record::<C>(&RecordRef::Truncate { since }).map_err(|e| StorageIOError::write_logs(&e))?;
        lock(&self.index)?.truncate(since);
        self.write(framed, Durability::Sync, CompactCheck::Growth)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let framed =
            encode_record::<C>(&RecordRef::Purge { upto: &log_id }).map_err(|e| StorageIOError::write_logs(&e))?;
        lock(&self.index)?.purge(log_id);
        self.write(framed, Durability::Sync, CompactCheck::AfterPurge)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
