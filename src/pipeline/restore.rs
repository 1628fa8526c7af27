//! Restore assigned partitions' state from the changelog into RocksDB before they are processed.
//!
//! The local copy records the next changelog offset it holds. Restoring reads from there to the
//! end (read_committed: aborted writes of a crashed instance are never restored). If the local
//! copy claims a position the changelog does not have (the topic was recreated, or the copy
//! belongs to another cluster), it is not trusted: the partition is wiped and restored in full.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError as RdError;
use rdkafka::{Message, Offset};
use tracing::warn;

use crate::config::KafkaConfig;
use crate::kafka::reader::{Read, ReadError, Start, TopicReader};
use crate::kafka::KafkaError;
use crate::store::{Batch, Store, StoreError};
use crate::telemetry::Restored;

/// Errors restoring a partition.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Kafka failed.
    #[error("restore: {0}")]
    Kafka(#[from] KafkaError),
    /// The local store failed.
    #[error("restore: {0}")]
    Store(#[from] StoreError),
    /// The changelog did not reach its end in time.
    #[error("restore of {topic}[{partition}] timed out at offset {at}")]
    Timeout {
        /// Changelog topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Where it stopped.
        at: i64,
    },
}

impl From<RdError> for RestoreError {
    fn from(e: RdError) -> Self {
        RestoreError::Kafka(KafkaError::Client(e))
    }
}

/// Where restoring a partition starts, given the local copy's position and the changelog's
/// watermarks; wipes the local copy when it cannot be trusted.
fn start_offset(
    store: &Store,
    changelog: &str,
    partition: i32,
    (low, high): (i64, i64),
) -> Result<i64, RestoreError> {
    Ok(match store.changelog_position(partition)? {
        Some(pos) if pos > high => {
            warn!(%changelog, partition, pos, high, "local state is ahead of the changelog; wiping it");
            store.clear_partition(partition)?;
            low
        }
        Some(pos) if pos < low => {
            warn!(%changelog, partition, pos, low, "local state predates the changelog's start; wiping it");
            store.clear_partition(partition)?;
            low
        }
        Some(pos) => pos,
        None => {
            // Never restored here: whatever is local for this partition is unaccounted for.
            store.clear_partition(partition)?;
            low
        }
    })
}

/// Bring local state of `partitions` up to the end of their changelog partitions, with one
/// consumer for all of them (a rebalance that hands over many partitions pays one consumer
/// start-up, not one each). Returns what was done (records applied, how long it took).
pub fn restore_partitions(
    kafka: &KafkaConfig,
    store: &Store,
    changelog: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let mut reader = TopicReader::new(
        kafka,
        "restore",
        changelog,
        "mailguard restores its state from it",
    )?;
    // Next offset to apply per partition still being restored.
    let mut next: HashMap<i32, i64> = HashMap::new();
    for &p in partitions {
        let marks = reader.watermarks(p)?;
        let from = start_offset(store, changelog, p, marks)?;
        if from < marks.1 {
            next.insert(p, from);
        }
    }
    if next.is_empty() {
        return Ok(Restored {
            records: 0,
            took: started.elapsed(),
        });
    }
    let starts: Vec<(i32, Start)> = next.iter().map(|(&p, &o)| (p, Start::At(o))).collect();
    reader.assign(&starts)?;
    let applied = apply_to_end(&mut reader, store, &mut next, started + timeout)?;
    // `PartitionsRestored` logs and counts it.
    Ok(Restored {
        records: applied,
        took: started.elapsed(),
    })
}

/// Applies the changelog from `next` to the end of every assigned partition (or fails at
/// `deadline`), storing the positions with the states; returns how many records it applied.
fn apply_to_end(
    reader: &mut TopicReader,
    store: &Store,
    next: &mut HashMap<i32, i64>,
    deadline: Instant,
) -> Result<u64, RestoreError> {
    let mut applied = 0u64;
    let mut batch = Batch::new();
    while !reader.loaded() {
        if Instant::now() > deadline {
            let partition = reader.pending().next().expect("not loaded: one is pending");
            return Err(RestoreError::Timeout {
                topic: reader.topic().to_string(),
                partition,
                at: next[&partition],
            });
        }
        let m = match reader.poll(Duration::from_millis(200)) {
            Ok(None | Some(Read::End(_))) => continue,
            Ok(Some(Read::Record(m))) => m,
            Err(ReadError::NotAuthorised(missing)) => return Err(missing.into()),
            Err(ReadError::Client(e)) => return Err(e.into()),
        };
        let p = m.partition();
        next.insert(p, m.offset() + 1);
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            warn!(changelog = %m.topic(), partition = p, offset = m.offset(), "changelog record without a valid key skipped");
            continue;
        };
        store.stage_state(&mut batch, p, key, m.payload());
        applied += 1;
        if batch.len() >= 10_000 {
            for (&p, &n) in next.iter() {
                store.stage_changelog_position(&mut batch, p, n);
            }
            store.write(std::mem::take(&mut batch))?;
        }
    }
    // The end is past any trailing transaction marker; position() says where that is.
    if let Ok(pos) = reader.consumer().position() {
        for (p, n) in next.iter_mut() {
            let at = pos.find_partition(reader.topic(), *p).map(|e| e.offset());
            if let Some(Offset::Offset(o)) = at {
                *n = (*n).max(o);
            }
        }
    }
    for (&p, &n) in next.iter() {
        store.stage_changelog_position(&mut batch, p, n);
    }
    store.write(batch)?;
    Ok(applied)
}
