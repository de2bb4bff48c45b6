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
//! The file is cut into segments (`raft-log.<sequence>.bin`, each with its own magic), so that
//! forgetting the past never means rewriting the present: once the current segment exceeds
//! [`LogStoreOptions::segment_bytes`] a new one is started, opened by the current vote, committed
//! index and purge point, so that older segments hold nothing but entries. A purge then deletes
//! the oldest segments whose every entry it covers. (An earlier version rewrote one file without
//! its dead records while appends waited; at a few megabytes of decisions per round that stalled
//! the cluster for over a second.) A segment is created under a temporary name, fsynced and
//! renamed, so a crash never leaves a half-made one behind; only the last segment can end in a
//! torn record.
//!
//! Reads never touch the disk: an in-memory index (a `BTreeMap` by log index) mirrors the files.

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Segment files are named `<SEGMENT_PREFIX><sequence, 20 digits><SEGMENT_SUFFIX>`.
const SEGMENT_PREFIX: &str = "raft-log.";
const SEGMENT_SUFFIX: &str = ".bin";
/// Where a new segment is written before it is renamed into place.
const NEW_SEGMENT_FILE_NAME: &str = "raft-log.next.tmp";
/// The single-file log of earlier versions; opened as the first segment.
const LEGACY_FILE_NAME: &str = "raft-log.bin";
/// The leftover of an earlier version's interrupted compaction (always incomplete).
const LEGACY_COMPACT_FILE_NAME: &str = "raft-log.bin.compact";
/// Identifies the file format; bump the digit when the format changes.
const MAGIC: &[u8; 8] = b"ENTRLOG1";
/// Length and checksum in front of every record.
const RECORD_HEADER: usize = 8;
/// No record is ever this big; a length above it is garbage (a torn or corrupt header).
const MAX_RECORD_BYTES: usize = 1 << 30;

fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{sequence:020}{SEGMENT_SUFFIX}"))
}

/// The log's segment files in `dir`, oldest first, with their sequence numbers.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(sequence) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((sequence, entry.path()));
    }
    segments.sort();
    Ok(segments)
}

/// The paths of the log's segment files in `dir`, oldest first (for tests and operators).
pub fn segment_paths(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(list_segments(dir)?.into_iter().map(|(_, path)| path).collect())
}

/// How big the log's segment files grow.
#[derive(Debug, Clone)]
pub struct LogStoreOptions {
    /// Start a new segment once the current one exceeds this size. Smaller segments free disk
    /// sooner after a purge; each costs a file and a few header records.
    pub segment_bytes: u64,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions { segment_bytes: 16 << 20 }
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

/// The segment files on disk.
struct LogFiles {
    dir: PathBuf,
    options: LogStoreOptions,
    /// The segment being appended to.
    current: File,
    current_sequence: u64,
    current_len: u64,
    /// The highest entry index appended to the current segment.
    current_max_index: Option<u64>,
    /// Older segments, oldest first.
    sealed: VecDeque<SealedSegment>,
}

struct SealedSegment {
    sequence: u64,
    len: u64,
    /// The highest entry index it holds; a purge past it makes the segment deletable.
    max_index: Option<u64>,
}

/// Whether a record must be on disk before the operation counts as done.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Sync,
    /// The committed index: losing it in a crash only means openraft re-learns it from the
    /// leader, so it rides along with the next synced record.
    Lazy,
}

/// The durable Raft log of one replica. Cloning gives another handle to the same log.
pub struct LogStore<C: RaftTypeConfig> {
    index: Arc<Mutex<LogIndex<C>>>,
    files: Arc<Mutex<LogFiles>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore { index: self.index.clone(), files: self.files.clone() }
    }
}

/// Reads the log for openraft's replication tasks while the core keeps writing.
pub struct LogReader<C: RaftTypeConfig> {
    index: Arc<Mutex<LogIndex<C>>>,
}

fn lock<'a, T, NID: openraft::NodeId>(mutex: &'a Mutex<T>) -> Result<MutexGuard<'a, T>, StorageError<NID>> {
    // A poisoned lock means a panic interrupted a change half way; the index can no longer be
    // trusted to mirror the files, so the replica stops instead of guessing.
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

/// Makes a rename, a creation or a removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What replaying one segment found.
struct Replayed {
    /// Bytes of the file that hold whole records (less than its length when the tail is torn).
    valid_len: usize,
    max_index: Option<u64>,
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
        // A segment that never reached its rename was never used; an earlier version's
        // interrupted compaction is incomplete by definition.
        for leftover in [NEW_SEGMENT_FILE_NAME, LEGACY_COMPACT_FILE_NAME] {
            match std::fs::remove_file(dir.join(leftover)) {
                Ok(()) => tracing::warn!(dir = %dir.display(), file = leftover, "removed an unfinished raft log file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut segments = list_segments(dir)?;
        let legacy = dir.join(LEGACY_FILE_NAME);
        if std::fs::metadata(&legacy).is_ok_and(|m| m.len() < MAGIC.len() as u64) {
            // Its creation was cut short before the magic was synced: nothing was ever in it.
            std::fs::remove_file(&legacy)?;
        }
        if legacy.exists() {
            if !segments.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} holds both {LEGACY_FILE_NAME} and log segments", dir.display()),
                ));
            }
            let first = segment_path(dir, 0);
            std::fs::rename(&legacy, &first)?;
            sync_dir(dir)?;
            segments.push((0, first));
        }
        if segments.is_empty() {
            let index = LogIndex::new();
            let (current, len) = Self::create_segment(dir, 0, &index)?;
            return Ok(Self::assemble(
                index,
                LogFiles {
                    dir: dir.to_owned(),
                    options,
                    current,
                    current_sequence: 0,
                    current_len: len,
                    current_max_index: None,
                    sealed: VecDeque::new(),
                },
            ));
        }
        let mut index = LogIndex::new();
        let mut sealed = VecDeque::new();
        let last = segments.len() - 1;
        let mut current = None;
        for (position, (sequence, path)) in segments.into_iter().enumerate() {
            let bytes = std::fs::read(&path)?;
            let replayed = Self::replay(&bytes, &path, &mut index)?;
            if position < last {
                if replayed.valid_len < bytes.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: torn record in a segment that has newer segments after it", path.display()),
                    ));
                }
                sealed.push_back(SealedSegment { sequence, len: bytes.len() as u64, max_index: replayed.max_index });
                continue;
            }
            let file = OpenOptions::new().append(true).open(&path)?;
            if replayed.valid_len < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    dropped_bytes = bytes.len() - replayed.valid_len,
                    "raft log ends in a torn record (a crash during a write); dropping it"
                );
                file.set_len(replayed.valid_len as u64)?;
                file.sync_all()?;
            }
            current = Some((file, sequence, replayed.valid_len as u64, replayed.max_index));
        }
        let (file, sequence, len, max_index) = current.expect("at least one segment");
        Ok(Self::assemble(
            index,
            LogFiles {
                dir: dir.to_owned(),
                options,
                current: file,
                current_sequence: sequence,
                current_len: len,
                current_max_index: max_index,
                sealed,
            },
        ))
    }

    fn assemble(index: LogIndex<C>, files: LogFiles) -> Self {
        LogStore { index: Arc::new(Mutex::new(index)), files: Arc::new(Mutex::new(files)) }
    }

    /// Creates segment `sequence` opened by the index's vote, committed index and purge point,
    /// durably (temporary file, fsync, rename, directory fsync). Returns it open for appending,
    /// and its length.
    fn create_segment(dir: &Path, sequence: u64, index: &LogIndex<C>) -> io::Result<(File, u64)> {
        let mut content = MAGIC.to_vec();
        if let Some(vote) = &index.vote {
            content.extend(encode_record::<C>(&RecordRef::Vote(vote))?);
        }
        if index.committed.is_some() {
            content.extend(encode_record::<C>(&RecordRef::Committed(&index.committed))?);
        }
        if let Some(upto) = &index.last_purged {
            content.extend(encode_record::<C>(&RecordRef::Purge { upto })?);
        }
        let tmp_path = dir.join(NEW_SEGMENT_FILE_NAME);
        {
            let mut tmp = File::create(&tmp_path)?;
            tmp.write_all(&content)?;
            tmp.sync_all()?;
        }
        let path = segment_path(dir, sequence);
        std::fs::rename(&tmp_path, &path)?;
        sync_dir(dir)?;
        Ok((OpenOptions::new().append(true).open(&path)?, content.len() as u64))
    }

    /// Replays one segment into `index`.
    fn replay(bytes: &[u8], path: &Path, index: &mut LogIndex<C>) -> io::Result<Replayed> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an entente raft log segment (bad magic)", path.display()),
            ));
        }
        let mut max_index = None;
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
            if let Record::Append(entries) = &record {
                max_index = entries.iter().map(|e| e.get_log_id().index).chain(max_index).max();
            }
            index.apply(record);
            pos += end;
        }
        Ok(Replayed { valid_len: pos, max_index })
    }

    /// Writes `record` (already framed) in the blocking pool and fsyncs it when asked. An append
    /// names the highest index it holds. Starts a new segment when the current one is full, and
    /// deletes the oldest segments once everything in them is purged.
    async fn write(&self, framed: Vec<u8>, durability: Durability, max_index: Option<u64>) -> io::Result<()> {
        let files = self.files.clone();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut log = files.lock().map_err(|_| io::Error::other("raft log file lock poisoned"))?;
            if let Err(e) = log.current.write_all(&framed) {
                // Cut off whatever part of the record made it, so that a later record does not
                // land behind garbage (which replay would rightly call corruption).
                let valid = log.current_len;
                if let Err(cut) = log.current.set_len(valid) {
                    tracing::error!(error = %cut, "cannot cut a partly written raft log record");
                }
                return Err(e);
            }
            log.current_len += framed.len() as u64;
            log.current_max_index = log.current_max_index.max(max_index);
            if durability == Durability::Sync {
                log.current.sync_data()?;
            }
            if log.current_len > log.options.segment_bytes {
                Self::start_segment(&mut log, &index)?;
            }
            Self::delete_purged_segments(&mut log, &index)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Seals the current segment and starts the next. Called with the file lock held.
    fn start_segment(log: &mut LogFiles, index: &Mutex<LogIndex<C>>) -> io::Result<()> {
        // Only the last segment may end torn: make this one whole before it stops being last.
        log.current.sync_data()?;
        let sequence = log.current_sequence + 1;
        let (file, len) = {
            let index = index.lock().map_err(|_| io::Error::other("raft log index lock poisoned"))?;
            Self::create_segment(&log.dir, sequence, &index)?
        };
        log.sealed.push_back(SealedSegment {
            sequence: log.current_sequence,
            len: log.current_len,
            max_index: log.current_max_index,
        });
        log.current = file;
        log.current_sequence = sequence;
        log.current_len = len;
        log.current_max_index = None;
        tracing::debug!(sequence, "started a new raft log segment");
        Ok(())
    }

    /// Deletes the oldest sealed segments whose entries are all purged. Only a prefix goes: a
    /// later segment's records (a truncation) may concern entries of an earlier one, never the
    /// other way round, and every segment opens with the vote, committed index and purge point
    /// of its time, so the newest of each survives in a kept segment.
    fn delete_purged_segments(log: &mut LogFiles, index: &Mutex<LogIndex<C>>) -> io::Result<()> {
        // Most writes find nothing sealed: no need to take the index lock for them.
        if log.sealed.is_empty() {
            return Ok(());
        }
        let purged = {
            let index = index.lock().map_err(|_| io::Error::other("raft log index lock poisoned"))?;
            index.last_purged.as_ref().map(|id| id.index)
        };
        let mut deleted = 0;
        while let Some(oldest) = log.sealed.front() {
            let all_purged = match (oldest.max_index, purged) {
                (None, _) => true,
                (Some(max), Some(purged)) => max <= purged,
                (Some(_), None) => false,
            };
            if !all_purged {
                break;
            }
            std::fs::remove_file(segment_path(&log.dir, oldest.sequence))?;
            log.sealed.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&log.dir)?;
            tracing::debug!(deleted, "deleted purged raft log segments");
        }
        Ok(())
    }

    /// Appends entries and returns once they are on disk. `RaftLogStorage::append` is this plus
    /// the callback; it is public for callers (and tests) that have no callback to give.
    pub async fn append_durable(&mut self, entries: Vec<C::Entry>) -> Result<(), StorageError<C::NodeId>> {
        if entries.is_empty() {
            return Ok(());
        }
        let framed = encode_record::<C>(&RecordRef::Append(&entries)).map_err(|e| StorageIOError::write_logs(&e))?;
        let max_index = entries.iter().map(|e| e.get_log_id().index).max();
        // The index learns the entries before they are durable: openraft may read what it just
        // appended (to replicate it) but counts it as stored only once the callback fires.
        lock(&self.index)?.append(entries);
        self.write(framed, Durability::Sync, max_index)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// The bytes of all segment files now, for tests and metrics.
    pub fn disk_bytes(&self) -> Result<u64, StorageError<C::NodeId>> {
        let files = lock(&self.files)?;
        Ok(files.current_len + files.sealed.iter().map(|s| s.len).sum::<u64>())
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
        self.write(framed, Durability::Sync, None)
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
        self.write(framed, Durability::Lazy, None)
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
        self.write(framed, Durability::Sync, None)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let framed =
            encode_record::<C>(&RecordRef::Purge { upto: &log_id }).map_err(|e| StorageIOError::write_logs(&e))?;
        lock(&self.index)?.purge(log_id);
        self.write(framed, Durability::Sync, None)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
