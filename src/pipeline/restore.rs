//! Restore assigned partitions' state from the changelog into RocksDB before they are processed.
//!
//! The local copy records the next changelog offset it holds. Restoring reads from there to the
//! end (read_committed: aborted writes of a crashed instance are never restored). If the local
//! copy claims a position the changelog does not have (the topic was recreated, or the copy
//! belongs to another cluster), it is not trusted: the partition is wiped and restored in full.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::warn;

use crate::config::KafkaConfig;
use crate::kafka::{client, KafkaError};
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
    let consumer: BaseConsumer<client::ReaderContext> =
        client::reader(kafka, "restore").create_with_context(client::ReaderContext)?;
    // Next offset to apply per partition still being restored.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        let marks = consumer.fetch_watermarks(changelog, p, Duration::from_secs(10))?;
        let from = start_offset(store, changelog, p, marks)?;
        if from < marks.1 {
            tpl.add_partition_offset(changelog, p, Offset::Offset(from))?;
            next.insert(p, from);
        }
    }
    let done = |records| Restored {
        records,
        took: started.elapsed(),
    };
    if next.is_empty() {
        return Ok(done(0));
    }
    consumer.assign(&tpl)?;
    let mut pending: HashSet<i32> = next.keys().copied().collect();
    let mut applied = 0u64;
    let mut batch = Batch::new();
    while !pending.is_empty() {
        if started.elapsed() > timeout {
            let partition = *pending.iter().min().expect("pending is not empty");
            return Err(RestoreError::Timeout {
                topic: changelog.to_string(),
                partition,
                at: next[&partition],
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(RdError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                let p = m.partition();
                next.insert(p, m.offset() + 1);
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    warn!(%changelog, partition = p, offset = m.offset(), "changelog record without a valid key skipped");
                    continue;
                };
                store.stage_state(&mut batch, p, key, m.payload());
                applied += 1;
                if batch.len() >= 10_000 {
                    for (&p, &n) in &next {
                        store.stage_changelog_position(&mut batch, p, n);
                    }
                    store.write(std::mem::take(&mut batch))?;
                }
            }
        }
    }
    // The end is past any trailing transaction marker; position() says where that is.
    if let Ok(pos) = consumer.position() {
        for (p, n) in next.iter_mut() {
            if let Some(Offset::Offset(o)) = pos.find_partition(changelog, *p).map(|e| e.offset()) {
                *n = (*n).max(o);
            }
        }
    }
    for (&p, &n) in &next {
        store.stage_changelog_position(&mut batch, p, n);
    }
    store.write(batch)?;
    // `PartitionsRestored` logs and counts it.
    Ok(done(applied))
}
