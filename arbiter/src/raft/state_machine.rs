//! The replicated state machine of one replica and its snapshots on disk.
//!
//! The state itself ([`ReplicatedState`]) lives in memory behind a read-write lock that the
//! arbiter reads from ([`SharedState`]). It is not written to disk on every apply: after a
//! crash, the latest snapshot is loaded and openraft re-applies the committed log entries after
//! it. A snapshot is the whole state in MessagePack, plus openraft's metadata, in
//! `<data-dir>/snapshot-<id>.bin`. It is written to a temporary file, fsynced and renamed into
//! place (and the directory fsynced) before openraft learns it exists, because openraft purges the
//! log entries a snapshot covers: a snapshot that could vanish in a crash would take them along.
//!
//! Snapshot file: `MAGIC meta_len:u32le meta data_len:u64le data crc32:u32le`, the checksum
//! covering everything before it; `meta` is the MessagePack `SnapshotMeta`, `data` exactly the
//! bytes sent to followers (the MessagePack state).

use super::{NodeId, ReplicatedState, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

const SNAPSHOT_MAGIC: &[u8; 8] = b"ENTSNAP1";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".bin";
const TEMP_SUFFIX: &str = ".tmp";

type Meta = SnapshotMeta<NodeId, BasicNode>;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The state with the position in the log it reflects.
#[derive(Debug, Clone, Default)]
pub struct Applied<S> {
    pub state: S,
    /// The last entry applied to `state`.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub last_membership: StoredMembership<NodeId, BasicNode>,
}

/// A handle on a replica's applied state, for the code that reads it (the arbiter reads the
/// ledger here; it writes only through Raft).
pub struct SharedState<S>(Arc<RwLock<Applied<S>>>);

impl<S> Clone for SharedState<S> {
    fn clone(&self) -> Self {
        SharedState(self.0.clone())
    }
}

impl<S: ReplicatedState> SharedState<S> {
    /// Read access to the state and its log position. Hold it briefly: applying waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied<S>> {
        // Applying cannot panic half way through a state change in this module, and a panic in
        // the application's `apply` leaves the replica stopped anyway; reading the last state is
        // the most useful thing to offer then.
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the state as applied so far.
    pub fn state(&self) -> S {
        self.read().state.clone()
    }

    /// The last applied log entry.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.read().last_applied
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied<S>> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The snapshot openraft knows about, kept in memory so serving it to a follower needs no read.
#[derive(Clone)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

/// The snapshot directory and its current snapshot.
struct SnapshotDir {
    dir: PathBuf,
    current: Option<StoredSnapshot>,
    /// Makes snapshot ids unique among snapshots this process builds at the same log position.
    built: u64,
}

/// openraft's state machine over a [`ReplicatedState`], with snapshots in a directory.
pub struct StateMachineStore<S: ReplicatedState> {
    shared: SharedState<S>,
    snapshots: Arc<Mutex<SnapshotDir>>,
}

/// Builds a snapshot from the shared state (openraft runs it beside the apply loop).
pub struct SnapshotBuilder<S: ReplicatedState> {
    shared: SharedState<S>,
    snapshots: Arc<Mutex<SnapshotDir>>,
}

fn io_invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn lock_dir(snapshots: &Mutex<SnapshotDir>) -> io::Result<std::sync::MutexGuard<'_, SnapshotDir>> {
    snapshots.lock().map_err(|_| io::Error::other("snapshot directory lock poisoned"))
}

/// A file name made from a snapshot id. Ids of installed snapshots come from the leader, so only
/// characters that are safe in a file name are kept.
fn snapshot_file_name(id: &str) -> String {
    let safe: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(128).collect();
    format!("{SNAPSHOT_PREFIX}{safe}{SNAPSHOT_SUFFIX}")
}

fn encode_snapshot_file(snapshot: &StoredSnapshot) -> io::Result<Vec<u8>> {
    let meta = rmp_serde::to_vec_named(&snapshot.meta).map_err(io::Error::other)?;
    let meta_len = u32::try_from(meta.len()).map_err(|_| io::Error::other("snapshot metadata too large"))?;
    let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 16 + meta.len() + snapshot.data.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&snapshot.data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode_snapshot_file(bytes: &[u8], path: &Path) -> io::Result<StoredSnapshot> {
    let bad = |what: &str| io_invalid(format!("{}: {what}", path.display()));
    let min = SNAPSHOT_MAGIC.len() + 4 + 8 + 4;
    if bytes.len() < min || &bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(bad("not an entente snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let mut pos = SNAPSHOT_MAGIC.len();
    let meta_len = u32::from_le_bytes([body[pos], body[pos + 1], body[pos + 2], body[pos + 3]]) as usize;
    pos += 4;
    if body.len() < pos + meta_len + 8 {
        return Err(bad("truncated metadata"));
    }
    let meta: Meta = rmp_serde::from_slice(&body[pos..pos + meta_len]).map_err(|e| bad(&format!("metadata: {e}")))?;
    pos += meta_len;
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&body[pos..pos + 8]);
    pos += 8;
    let data_len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad("data length overflows"))?;
    if body.len() != pos + data_len {
        return Err(bad("data length does not match the file"));
    }
    Ok(StoredSnapshot { meta, data: body[pos..].to_vec() })
}

impl SnapshotDir {
    /// Makes `snapshot` durable as the current one and deletes the files of older ones. A
    /// snapshot older than the current one (a build that raced an install) is dropped.
    fn save(&mut self, snapshot: StoredSnapshot) -> io::Result<()> {
        if let Some(current) = &self.current {
            if current.meta.last_log_id > snapshot.meta.last_log_id {
                tracing::debug!(id = %snapshot.meta.snapshot_id, "dropping a snapshot older than the current one");
                return Ok(());
            }
        }
        let name = snapshot_file_name(&snapshot.meta.snapshot_id);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&encode_snapshot_file(&snapshot)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let other = entry.file_name().to_string_lossy().into_owned();
            if other != name && other.starts_with(SNAPSHOT_PREFIX) && other.ends_with(SNAPSHOT_SUFFIX) {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %other, error = %e, "cannot remove an old snapshot");
                }
            }
        }
        self.current = Some(snapshot);
        Ok(())
    }

    /// Finds the newest complete snapshot in `dir`; removes unfinished temporary files.
    fn load(dir: &Path) -> io::Result<SnapshotDir> {
        std::fs::create_dir_all(dir)?;
        let mut newest: Option<StoredSnapshot> = None;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(SNAPSHOT_PREFIX) {
                continue;
            }
            if name.ends_with(TEMP_SUFFIX) {
                // Written but never renamed: the snapshot was not complete, nobody relies on it.
                std::fs::remove_file(entry.path())?;
                continue;
            }
            if !name.ends_with(SNAPSHOT_SUFFIX) {
                continue;
            }
            let snapshot = decode_snapshot_file(&std::fs::read(entry.path())?, &entry.path())?;
            if newest.as_ref().is_none_or(|n| n.meta.last_log_id < snapshot.meta.last_log_id) {
                newest = Some(snapshot);
            }
        }
        Ok(SnapshotDir { dir: dir.to_owned(), current: newest, built: 0 })
    }
}

impl<S: ReplicatedState> StateMachineStore<S> {
    /// Opens the state machine whose snapshots live in `dir`, starting from the newest snapshot
    /// there (or the default state). Blocks on file I/O.
    pub fn open(dir: &Path) -> StorageResult<Self> {
        let snapshots = SnapshotDir::load(dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let applied = match &snapshots.current {
            None => Applied::default(),
            Some(snapshot) => Applied {
                state: rmp_serde::from_slice(&snapshot.data).map_err(|e| {
                    StorageIOError::read_snapshot(Some(snapshot.meta.signature()), &io_invalid(e.to_string()))
                })?,
                last_applied: snapshot.meta.last_log_id,
                last_membership: snapshot.meta.last_membership.clone(),
            },
        };
        Ok(StateMachineStore {
            shared: SharedState(Arc::new(RwLock::new(applied))),
            snapshots: Arc::new(Mutex::new(snapshots)),
        })
    }

    /// A handle to read the applied state.
    pub fn shared(&self) -> SharedState<S> {
        self.shared.clone()
    }

    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || lock_dir(&snapshots)?.save(snapshot)).await.map_err(io::Error::other)?
    }
}

impl<S: ReplicatedState> RaftSnapshotBuilder<TypeConfig<S>> for SnapshotBuilder<S> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig<S>>> {
        // State, position and membership are read under one lock, so they agree.
        let (data, last_log_id, last_membership) = {
            let applied = self.shared.read();
            let data = rmp_serde::to_vec_named(&applied.state)
                .map_err(|e| StorageIOError::write_snapshot(None, &io::Error::other(e)))?;
            (data, applied.last_applied, applied.last_membership.clone())
        };
        let snapshots = self.snapshots.clone();
        let snapshot = tokio::task::spawn_blocking(move || -> io::Result<StoredSnapshot> {
            let mut dir = lock_dir(&snapshots)?;
            dir.built += 1;
            let snapshot_id = match &last_log_id {
                Some(id) => format!("{}-{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index, dir.built),
                None => format!("0-0-0-{}", dir.built),
            };
            let snapshot = StoredSnapshot { meta: SnapshotMeta { last_log_id, last_membership, snapshot_id }, data };
            dir.save(snapshot.clone())?;
            Ok(snapshot)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r)
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        tracing::info!(id = %snapshot.meta.snapshot_id, bytes = snapshot.data.len(), "built a snapshot");
        Ok(Snapshot { meta: snapshot.meta, snapshot: Box::new(Cursor::new(snapshot.data)) })
    }
}

impl<S: ReplicatedState> RaftStateMachine<TypeConfig<S>> for StateMachineStore<S> {
    type SnapshotBuilder = SnapshotBuilder<S>;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<S::Response>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig<S>>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut applied = self.shared.write();
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(S::Response::default()),
                EntryPayload::Normal(command) => responses.push(applied.state.apply(&command, &entry.log_id)),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    let membership = applied.last_membership.clone();
                    applied.state.on_membership(&membership);
                    responses.push(S::Response::default());
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone(), snapshots: self.snapshots.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<Cursor<Vec<u8>>>) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let state: S = rmp_serde::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &io_invalid(format!("undecodable snapshot: {e}")))
        })?;
        // Durable first: once the state is replaced openraft may purge the log the snapshot covers.
        self.save_snapshot(StoredSnapshot { meta: meta.clone(), data })
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let mut applied = self.shared.write();
        applied.state = state;
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        tracing::info!(id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig<S>>>> {
        let current = lock_dir(&self.snapshots).map_err(|e| StorageIOError::read_snapshot(None, &e))?.current.clone();
        Ok(current.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
