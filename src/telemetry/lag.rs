//! Consumer lag from librdkafka's statistics (`statistics.interval.ms` on the group consumer).
//!
//! librdkafka's own `consumer_lag` is measured against the consumer's committed offset, which
//! mailguard never updates through the consumer: offsets are committed inside the producer's
//! transaction (`send_offsets_to_transaction`), so that figure would stay at whatever was
//! committed when the partition was assigned. The lag here is the end of the partition — the last
//! stable offset, as mailguard reads `read_committed` — minus the next offset mailguard will read.
//! The committed position trails the read position by at most one transaction
//! (`kafka.commit_interval_ms`), which the `MailguardNoCommitWhileLagging` alert watches.

use rdkafka::statistics::Partition;
use rdkafka::Statistics;

/// Lag of one owned input partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records not yet read (never negative).
    pub lag: i64,
}

/// The lag of `p`, if it is an assigned partition whose offsets are known.
fn partition_lag(p: &Partition) -> Option<i64> {
    // -1 is librdkafka's internal "unassigned" partition; `desired` marks the assignment.
    if p.partition < 0 || !p.desired || p.unknown {
        return None;
    }
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    // Offsets below 0 are librdkafka's "invalid/logical" markers: nothing read yet.
    let position = [p.app_offset, p.committed_offset, p.lo_offset]
        .into_iter()
        .find(|&o| o >= 0)?;
    (end >= 0).then(|| (end - position).max(0))
}

/// Lag of every assigned partition in one statistics report, sorted by topic and partition.
pub fn from_statistics(stats: &Statistics) -> Vec<PartitionLag> {
    let mut out: Vec<PartitionLag> = stats
        .topics
        .iter()
        .flat_map(|(topic, t)| {
            t.partitions.values().filter_map(move |p| {
                partition_lag(p).map(|lag| PartitionLag {
                    topic: topic.clone(),
                    partition: p.partition,
                    lag,
                })
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::Topic;

    fn partition(id: i32, desired: bool, app: i64, committed: i64, lo: i64, ls: i64) -> Partition {
        Partition {
            partition: id,
            desired,
            app_offset: app,
            committed_offset: committed,
            lo_offset: lo,
            ls_offset: ls,
            hi_offset: ls + 1,
            ..Partition::default()
        }
    }

    #[test]
    fn lag_is_last_stable_offset_minus_read_position_of_assigned_partitions() {
        let partitions = [
            partition(0, true, 90, 10, 0, 100),       // read to 90: 10 behind
            partition(1, true, -1001, 40, 0, 100),    // nothing read yet: from the committed offset
            partition(2, true, -1001, -1001, 5, 100), // nothing committed: from the start
            partition(3, false, 0, 0, 0, 100),        // not ours
            partition(-1, true, 0, 0, 0, 100),        // librdkafka's internal partition
            partition(4, true, 120, 0, 0, 100),       // read past a stale end: never negative
        ];
        let topic = Topic {
            topic: "v".into(),
            partitions: partitions.into_iter().map(|p| (p.partition, p)).collect(),
            ..Topic::default()
        };
        let stats = Statistics {
            topics: [("v".to_string(), topic)].into_iter().collect(),
            ..Statistics::default()
        };
        let lags: Vec<(i32, i64)> = from_statistics(&stats)
            .into_iter()
            .map(|l| (l.partition, l.lag))
            .collect();
        assert_eq!(lags, vec![(0, 10), (1, 60), (2, 95), (4, 0)]);
    }
}
