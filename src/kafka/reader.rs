//! One reader of assigned partitions, for every part of mailguard that reads a topic outside the
//! consumer group: state restore, the table loader, the API's view and `mailguard tail`.
//!
//! Each of them had written the same loop — partition count, `assign` from stored positions,
//! bounded polls, end-of-partition tracking, and the missing-ACL mapping — so a new input topic
//! meant one more copy. A [`TopicReader`] is a plain `assign()` consumer (`read_committed`, never
//! committing: [`client::reader`]) of one topic. It knows which partitions have reached their end
//! (librdkafka's end-of-partition event names the partition but not the topic, which is why a
//! reader holds one topic), and it classifies errors once: a missing ACL, which retrying never
//! fixes, apart from everything librdkafka retries by itself.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{admin, client, KafkaError};
use crate::config::KafkaConfig;

/// Where reading a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its first retained record.
    Beginning,
    /// This offset (a stored position).
    At(i64),
}

/// What one poll read.
pub enum Read<'a> {
    /// A record.
    Record(BorrowedMessage<'a>),
    /// The end of this partition was reached.
    End(i32),
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// An ACL is missing: retrying never helps, so the caller stops (naming it).
    #[error(transparent)]
    NotAuthorised(KafkaError),
    /// Anything else librdkafka reported; it retries these by itself (a broker that went away,
    /// a request that timed out), so the caller may carry on.
    #[error("kafka: {0}")]
    Client(RdError),
}

/// An `assign()`-only reader of one topic.
pub struct TopicReader<C: ConsumerContext + 'static = client::ReaderContext> {
    topic: String,
    group: String,
    principal: String,
    why: String,
    consumer: BaseConsumer<C>,
    assigned: BTreeSet<i32>,
    /// Partitions whose end was reached after their last record.
    at_end: BTreeSet<i32>,
    /// Partitions whose end was reached at least once.
    ever_at_end: BTreeSet<i32>,
}

impl TopicReader<client::ReaderContext> {
    /// A reader of `topic` with the readers' own context. `purpose` names its client and group
    /// ([`client::reader_group`]); `why` says what mailguard reads it for, in a missing-ACL error.
    pub fn new(
        kafka: &KafkaConfig,
        purpose: &str,
        topic: &str,
        why: &str,
    ) -> Result<Self, KafkaError> {
        Self::with_context(kafka, purpose, topic, why, client::ReaderContext, |_| {})
    }
}

impl<C: ConsumerContext + 'static> TopicReader<C> {
    /// [`TopicReader::new`] with the context `ctx`; `tune` may add properties the role allows
    /// (e.g. a statistics interval).
    pub fn with_context(
        kafka: &KafkaConfig,
        purpose: &str,
        topic: &str,
        why: &str,
        ctx: C,
        tune: impl FnOnce(&mut ClientConfig),
    ) -> Result<Self, KafkaError> {
        let mut config = client::reader(kafka, purpose);
        tune(&mut config);
        let consumer = config.create_with_context(ctx)?;
        Ok(TopicReader {
            topic: topic.to_owned(),
            group: client::reader_group(kafka, purpose),
            principal: principal(kafka),
            why: why.to_owned(),
            consumer,
            assigned: BTreeSet::new(),
            at_end: BTreeSet::new(),
            ever_at_end: BTreeSet::new(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer, for what this type does not cover (its context, positions).
    pub fn consumer(&self) -> &BaseConsumer<C> {
        &self.consumer
    }

    /// The topic's partition count (waiting a little for a topic just created).
    pub fn partition_count(&self) -> Result<i32, KafkaError> {
        admin::partition_count(&self.consumer, &self.topic)
    }

    /// The low and high watermarks of `partition`.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        Ok(self
            .consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(10))?)
    }

    /// Reads `starts`' partitions from where each says (replacing any earlier assignment).
    pub fn assign(&mut self, starts: &[(i32, Start)]) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for &(p, start) in starts {
            let offset = match start {
                Start::Beginning => Offset::Beginning,
                Start::At(o) => Offset::Offset(o),
            };
            tpl.add_partition_offset(&self.topic, p, offset)?;
        }
        self.consumer.assign(&tpl)?;
        self.assigned = starts.iter().map(|(p, _)| *p).collect();
        self.at_end.clear();
        self.ever_at_end.clear();
        Ok(())
    }

    /// Reads every partition of the topic, each from where `start` says.
    pub fn assign_all<E: From<KafkaError>>(
        &mut self,
        mut start: impl FnMut(i32) -> Result<Start, E>,
    ) -> Result<(), E> {
        let n = self.partition_count()?;
        let starts = (0..n)
            .map(|p| Ok((p, start(p)?)))
            .collect::<Result<Vec<_>, E>>()?;
        Ok(self.assign(&starts)?)
    }

    /// The next record or end of partition within `timeout`, if any.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Read<'_>>, ReadError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Err(RdError::PartitionEOF(p))) => {
                self.at_end.insert(p);
                self.ever_at_end.insert(p);
                Ok(Some(Read::End(p)))
            }
            Some(Err(e)) => Err(match self.not_authorised(&e) {
                Some(missing) => ReadError::NotAuthorised(missing),
                None => ReadError::Client(e),
            }),
            Some(Ok(m)) => {
                self.at_end.remove(&rdkafka::Message::partition(&m));
                Ok(Some(Read::Record(m)))
            }
        }
    }

    /// Whether `partition` is at its end (reached after its last record).
    pub fn at_end(&self, partition: i32) -> bool {
        self.at_end.contains(&partition)
    }

    /// Whether every assigned partition has reached its end at least once.
    pub fn loaded(&self) -> bool {
        self.assigned.is_subset(&self.ever_at_end)
    }

    /// Assigned partitions that have not reached their end yet, lowest first.
    pub fn pending(&self) -> impl Iterator<Item = i32> + '_ {
        self.assigned.difference(&self.ever_at_end).copied()
    }

    /// The missing ACL an error reports, if it is one.
    fn not_authorised(&self, e: &RdError) -> Option<KafkaError> {
        let (resource, operation) = match e.rdkafka_error_code()? {
            RDKafkaErrorCode::TopicAuthorizationFailed => (format!("Topic:{}", self.topic), "READ"),
            RDKafkaErrorCode::GroupAuthorizationFailed => {
                (format!("Group:{}", self.group), "DESCRIBE")
            }
            _ => return None,
        };
        Some(KafkaError::NotAuthorised {
            principal: self.principal.clone(),
            resource,
            operation: operation.into(),
            why: self.why.clone(),
        })
    }
}

/// `User:<sasl.username>` when SASL is configured (for messages; never a secret).
pub(crate) fn principal(kafka: &KafkaConfig) -> String {
    match kafka.client_properties.get("sasl.username") {
        Some(u) => format!("User:{u}"),
        None => "this client's principal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    fn produce(bootstrap: &str, topic: &str, partition: i32, n: usize) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        for i in 0..n {
            let key = format!("k{i}");
            p.send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload("v"),
            )
            .unwrap();
        }
        p.flush(Duration::from_secs(10)).unwrap();
    }

    /// Polls until `done` holds, collecting (partition, offset) of records; bounded.
    fn drain(r: &mut TopicReader, done: impl Fn(&TopicReader) -> bool) -> Vec<(i32, i64)> {
        let mut read = Vec::new();
        for _ in 0..200 {
            if let Some(Read::Record(m)) = r.poll(Duration::from_millis(50)).unwrap() {
                read.push((
                    rdkafka::Message::partition(&m),
                    rdkafka::Message::offset(&m),
                ));
            }
            if done(r) {
                return read;
            }
        }
        panic!("not done after 200 polls; read {read:?}");
    }

    #[test]
    fn reads_from_the_given_starts_and_knows_which_partitions_are_at_their_end() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 2, 1).unwrap();
        produce(&mock.bootstrap_servers(), "t", 0, 3);
        produce(&mock.bootstrap_servers(), "t", 1, 2);
        let kafka = KafkaConfig {
            bootstrap_servers: mock.bootstrap_servers(),
            ..KafkaConfig::default()
        };
        let mut r = TopicReader::new(&kafka, "test", "t", "a test reads it").unwrap();
        assert_eq!(r.partition_count().unwrap(), 2);
        // Partition 0 from a stored position, partition 1 from the beginning.
        r.assign_all(|p| {
            Ok::<_, KafkaError>(if p == 0 {
                Start::At(1)
            } else {
                Start::Beginning
            })
        })
        .unwrap();
        assert!(!r.loaded());
        assert_eq!(r.pending().collect::<Vec<_>>(), [0, 1]);
        let mut read = drain(&mut r, TopicReader::loaded);
        read.sort();
        assert_eq!(read, [(0, 1), (0, 2), (1, 0), (1, 1)]);
        assert!(r.at_end(0) && r.at_end(1));
        // A new record: partition 1 is no longer at its end until it is read to it again.
        produce(&mock.bootstrap_servers(), "t", 1, 1);
        let read = drain(&mut r, |r| r.at_end(1));
        assert_eq!(read, [(1, 2)]);
        assert!(r.loaded(), "loaded once stays loaded");
    }
}
