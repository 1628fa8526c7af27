//! Restore one partition's state from the changelog into RocksDB before it is processed.
//!
//! The local copy records the next changelog offset it holds. Restoring reads from there to the
//! end (read_committed: aborted writes of a crashed instance are never restored). If the local
//! copy claims a position the changelog does not have (the topic was recreated, or the copy
//! belongs to another cluster), it is not trusted: the partition is wiped and restored in full.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::KafkaConfig;
use crate::kafka::{client, KafkaError};
use crate::store::{Batch, Store, StoreError};

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

/// Bring local state of `partition` up to the end of its changelog. Returns records applied.
pub fn restore_partition(
    kafka: &KafkaConfig,
    store: &Store,
    changelog: &str,
    partition: i32,
    timeout: Duration,
) -> Result<u64, RestoreError> {
    let started = Instant::now();
    let consumer: BaseConsumer<client::ReaderContext> =
        client::reader(kafka, "restore").create_with_context(client::ReaderContext)?;
    let (low, high) = consumer.fetch_watermarks(changelog, partition, Duration::from_secs(10))?;
    let stored = store.changelog_position(partition)?;
    let from = match stored {
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
    };
    if from >= high {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, partition, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mut applied = 0u64;
    let mut next = from;
    let mut batch = Batch::new();
    loop {
        if started.elapsed() > timeout {
            return Err(RestoreError::Timeout {
                topic: changelog.to_string(),
                partition,
                at: next,
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(RdError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    warn!(%changelog, partition, offset = m.offset(), "changelog record without a valid key skipped");
                    next = m.offset() + 1;
                    continue;
                };
                store.stage_state(&mut batch, partition, key, m.payload());
                next = m.offset() + 1;
                applied += 1;
                if batch.len() >= 10_000 {
                    store.stage_changelog_position(&mut batch, partition, next);
                    store.write(std::mem::take(&mut batch))?;
                }
            }
        }
    }
    // The end is past any trailing transaction marker; position() says where that is.
    if let Ok(pos) = consumer.position() {
        if let Some(Offset::Offset(o)) =
            pos.find_partition(changelog, partition).map(|e| e.offset())
        {
            next = next.max(o);
        }
    }
    store.stage_changelog_position(&mut batch, partition, next);
    store.write(batch)?;
    info!(%changelog, partition, applied, from, to = next, took_ms = started.elapsed().as_millis() as u64, "partition restored");
    Ok(applied)
}
