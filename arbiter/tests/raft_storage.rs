//! The Raft log store and state machine on disk: openraft's own storage test suite, and what
//! must survive a restart or a crash in the middle of a write.

use entente_arbiter::raft::log_store::segment_paths;
use entente_arbiter::raft::{LogStore, LogStoreOptions, NodeId, ReplicatedState, StateMachineStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A replicated map, the smallest state that shows whether commands were applied in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Kv {
    map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Set {
    key: String,
    value: String,
}

impl ReplicatedState for Kv {
    type Command = Set;
    type Response = Option<String>;

    fn apply(&mut self, command: &Set, _log_id: &LogId<NodeId>) -> Option<String> {
        self.map.insert(command.key.clone(), command.value.clone())
    }
}

type C = TypeConfig<Kv>;

struct TempStores;

impl StoreBuilder<C, LogStore<C>, StateMachineStore<Kv>, tempfile::TempDir> for TempStores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore<C>, StateMachineStore<Kv>), StorageError<NodeId>> {
        let dir = tempfile::Builder::new().prefix("entente-raft-suite-").tempdir().expect("temporary directory");
        let log = LogStore::open(dir.path(), LogStoreOptions::default())?;
        let sm = StateMachineStore::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(TempStores).expect("openraft storage suite");
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn set_entry(term: u64, index: u64) -> Entry<C> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Set { key: format!("k{index}"), value: format!("v{index}") }),
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segment_paths(dir).expect("list segments").pop().expect("a segment")
}

fn open_log(dir: &Path) -> LogStore<C> {
    LogStore::open(dir, LogStoreOptions::default()).expect("open log")
}

async fn indexes(log: &mut LogStore<C>) -> Vec<u64> {
    log.try_get_log_entries(..).await.expect("read log").iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut log = open_log(dir.path());
        log.append_durable((1..=10).map(|i| set_entry(1, i)).collect()).await.expect("append");
        log.save_vote(&Vote::new_committed(2, 3)).await.expect("vote");
        log.save_committed(Some(log_id(1, 7))).await.expect("committed");
        log.truncate(log_id(1, 9)).await.expect("truncate");
        log.append_durable(vec![set_entry(2, 9)]).await.expect("append after truncate");
        log.purge(log_id(1, 3)).await.expect("purge");
    }
    let mut log = open_log(dir.path());
    assert_eq!(indexes(&mut log).await, (4..=9).collect::<Vec<_>>());
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 9)));
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new_committed(2, 3)));
    assert_eq!(log.read_committed().await.expect("committed"), Some(log_id(1, 7)));
    let entries = log.try_get_log_entries(9..10).await.expect("read");
    assert!(matches!(&entries[0].payload, EntryPayload::Normal(Set { key, .. }) if key == "k9"));
}

#[tokio::test]
async fn a_torn_last_record_is_dropped_on_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut log = open_log(dir.path());
        log.append_durable((1..=5).map(|i| set_entry(1, i)).collect()).await.expect("append");
        log.append_durable((6..=8).map(|i| set_entry(1, i)).collect()).await.expect("append");
    }
    let path = last_segment(dir.path());
    let full = std::fs::metadata(&path).expect("log file").len();
    // A crash in the middle of the second write: only part of its record reached the disk.
    std::fs::OpenOptions::new().write(true).open(&path).expect("open log file").set_len(full - 7).expect("cut");
    {
        let mut log = open_log(dir.path());
        assert_eq!(indexes(&mut log).await, (1..=5).collect::<Vec<_>>());
        // The torn bytes are gone from the file, so what is appended now is read back intact.
        log.append_durable(vec![set_entry(1, 6)]).await.expect("append after repair");
    }
    let mut log = open_log(dir.path());
    assert_eq!(indexes(&mut log).await, (1..=6).collect::<Vec<_>>());

    // A torn header (fewer bytes than a record header) is dropped as well.
    drop(log);
    let len = std::fs::metadata(&path).expect("log file").len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open log file");
    std::io::Write::write_all(&mut file, &[1, 2, 3]).expect("write garbage");
    drop(file);
    let mut log = open_log(dir.path());
    assert_eq!(indexes(&mut log).await, (1..=6).collect::<Vec<_>>());
    assert_eq!(log.disk_bytes().expect("len"), len);
}

#[tokio::test]
async fn a_bad_checksum_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut log = open_log(dir.path());
        log.append_durable((1..=3).map(|i| set_entry(1, i)).collect()).await.expect("append");
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    }
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).expect("read log file");
    // Flip a byte inside the first record's payload (after the 8-byte magic and 8-byte header).
    bytes[20] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write log file");
    let err = LogStore::<C>::open(dir.path(), LogStoreOptions::default()).err().expect("corruption must be reported");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn purge_deletes_whole_segments_and_keeps_the_vote() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogStoreOptions { segment_bytes: 1024 };
    {
        let mut log = LogStore::<C>::open(dir.path(), options.clone()).expect("open");
        log.save_vote(&Vote::new_committed(1, 1)).await.expect("vote");
        for i in 1..=200 {
            log.append_durable(vec![set_entry(1, i)]).await.expect("append");
        }
        let segments = segment_paths(dir.path()).expect("list").len();
        assert!(segments > 10, "200 entries in 1 KiB segments made only {segments} segments");
        let before = log.disk_bytes().expect("len");
        log.purge(log_id(1, 190)).await.expect("purge");
        let after = log.disk_bytes().expect("len");
        assert!(after * 5 < before, "the purge freed only {} of {before} bytes", before - after);
        assert!(segment_paths(dir.path()).expect("list").len() <= 3);
    }
    let mut log = LogStore::<C>::open(dir.path(), options).expect("reopen");
    assert_eq!(indexes(&mut log).await, (191..=200).collect::<Vec<_>>());
    assert_eq!(log.get_log_state().await.expect("state").last_purged_log_id, Some(log_id(1, 190)));
    // The vote was written once, into a segment long deleted: the newer segments carry it.
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new_committed(1, 1)));
}

#[tokio::test]
async fn truncations_across_segments_survive_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogStoreOptions { segment_bytes: 4096 };
    {
        let mut log = LogStore::<C>::open(dir.path(), options.clone()).expect("open");
        for i in 1..=300 {
            log.append_durable(vec![set_entry(1, i)]).await.expect("append");
            // Rewrite the tail now and then: the truncated entries often sit in an older segment.
            if i % 50 == 0 {
                log.truncate(log_id(1, i - 10)).await.expect("truncate");
                log.append_durable((i - 10..=i).map(|j| set_entry(2, j)).collect()).await.expect("append");
            }
        }
        log.purge(log_id(1, 20)).await.expect("purge");
    }
    assert!(segment_paths(dir.path()).expect("list").len() > 5);
    let mut log = LogStore::<C>::open(dir.path(), options).expect("reopen");
    assert_eq!(indexes(&mut log).await, (21..=300).collect::<Vec<_>>());
    let entries = log.try_get_log_entries(290..=290).await.expect("read");
    assert_eq!(entries[0].log_id, LogId::new(CommittedLeaderId::new(2, 1), 290));
    let entries = log.try_get_log_entries(285..=285).await.expect("read");
    assert_eq!(entries[0].log_id, log_id(1, 285));
}

#[tokio::test]
async fn a_log_from_the_single_file_format_opens_as_its_first_segment() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut log = open_log(dir.path());
        log.append_durable((1..=4).map(|i| set_entry(1, i)).collect()).await.expect("append");
        log.save_vote(&Vote::new(3, 2)).await.expect("vote");
    }
    // The earlier format is exactly one segment under the old name.
    std::fs::rename(last_segment(dir.path()), dir.path().join("raft-log.bin")).expect("rename");
    let mut log = open_log(dir.path());
    assert_eq!(indexes(&mut log).await, (1..=4).collect::<Vec<_>>());
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
    assert!(!dir.path().join("raft-log.bin").exists());
}

#[tokio::test]
async fn snapshot_is_loaded_on_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let built = {
        let mut sm = StateMachineStore::<Kv>::open(dir.path()).expect("open");
        let responses = sm.apply((1..=5).map(|i| set_entry(1, i))).await.expect("apply");
        assert_eq!(responses, vec![None; 5]);
        let replaced = sm.apply(vec![set_entry(1, 6)]).await.expect("apply");
        assert_eq!(replaced, vec![None]);
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("snapshot").meta
    };
    let mut sm = StateMachineStore::<Kv>::open(dir.path()).expect("reopen");
    let (last_applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(last_applied, Some(log_id(1, 6)));
    assert_eq!(sm.shared().state().map.len(), 6);
    let current = sm.get_current_snapshot().await.expect("snapshot").expect("a snapshot");
    assert_eq!(current.meta, built);
    let snapshot_files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("snapshot-"))
        .collect();
    assert_eq!(snapshot_files.len(), 1);
}
