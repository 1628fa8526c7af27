//! Where the processor's records go: a small trait, so the processor can be tested with a
//! vector and run with the transactional producer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KHeader, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};

/// A record header.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// Header name.
    pub key: &'a str,
    /// Header value.
    pub value: &'a [u8],
}

/// Errors sending a record.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The producer refused the record.
    #[error("produce to `{topic}`: {source}")]
    Produce {
        /// Destination.
        topic: String,
        /// Why.
        source: KafkaError,
    },
    /// A record could not be encoded (a bug: our own records must fit our own schemas).
    #[error("encode: {0}")]
    Encode(#[from] crate::codec::CodecError),
}

/// A record of the transaction (or a confirmed DLQ copy) was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The broker refused a record, or librdkafka gave up on it.
    #[error("delivery to `{topic}` failed: {source}")]
    Failed {
        /// Destination.
        topic: String,
        /// Why.
        source: KafkaError,
    },
    /// The records sent were not all acknowledged in time.
    #[error("delivery not confirmed: {0}")]
    Flush(KafkaError),
}

/// Destination of the processor's records.
pub trait Sink {
    /// Send one record; `partition` None = by key (murmur2), `payload` None = tombstone.
    fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: Option<i32>,
        headers: &[Header<'_>],
    ) -> Result<(), SinkError>;
}

/// A record captured by [`VecSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub payload: Option<Vec<u8>>,
    /// Explicit partition.
    pub partition: Option<i32>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A sink that keeps records in memory (tests, benches, replay).
#[derive(Debug, Default)]
pub struct VecSink {
    /// Records in send order.
    pub records: Vec<Captured>,
}

impl Sink for VecSink {
    fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: Option<i32>,
        headers: &[Header<'_>],
    ) -> Result<(), SinkError> {
        self.records.push(Captured {
            topic: topic.to_string(),
            key: key.to_vec(),
            payload: payload.map(<[u8]>::to_vec),
            partition,
            headers: headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.to_vec()))
                .collect(),
        });
        Ok(())
    }
}

/// Producer context that remembers, per changelog partition, the next offset after the last
/// delivered record: the restore position to store once the transaction commits.
pub struct DeliveryTracker {
    changelog: String,
    positions: Mutex<HashMap<i32, i64>>,
    /// The first failed delivery since the last [`take_deliveries`] (the rest add nothing).
    failure: Mutex<Option<DeliveryError>>,
}

impl DeliveryTracker {
    /// Track deliveries to `changelog`.
    pub fn new(changelog: &str) -> Arc<Self> {
        Arc::new(DeliveryTracker {
            changelog: changelog.to_string(),
            positions: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
        })
    }
}

/// rdkafka context wrapper around the tracker.
#[derive(Clone)]
pub struct TrackingContext(pub Arc<DeliveryTracker>);

impl ClientContext for TrackingContext {}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                if m.topic() == self.0.changelog {
                    let mut pos = self.0.positions.lock().expect("not poisoned");
                    let next = m.offset() + 1;
                    let e = pos.entry(m.partition()).or_insert(next);
                    *e = (*e).max(next);
                }
            }
            Err((e, m)) => {
                self.0
                    .failure
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| DeliveryError::Failed {
                        topic: m.topic().to_string(),
                        source: e.clone(),
                    });
            }
        }
    }
}

/// The transactional producer as a [`Sink`].
pub struct ProducerSink<'a> {
    /// The producer.
    pub producer: &'a BaseProducer<TrackingContext>,
}

impl Sink for ProducerSink<'_> {
    fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: Option<&[u8]>,
        partition: Option<i32>,
        headers: &[Header<'_>],
    ) -> Result<(), SinkError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for x in headers {
                h = h.insert(KHeader {
                    key: x.key,
                    value: Some(x.value),
                });
            }
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Back-pressure: serve delivery reports until librdkafka has room.
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(SinkError::Produce {
                        topic: topic.to_string(),
                        source: e,
                    })
                }
            }
        }
    }
}

/// Take the delivery results gathered since the last call: changelog positions, or the first
/// failure.
pub fn take_deliveries(tracker: &DeliveryTracker) -> Result<HashMap<i32, i64>, DeliveryError> {
    let failure = tracker.failure.lock().expect("not poisoned").take();
    let positions = std::mem::take(&mut *tracker.positions.lock().expect("not poisoned"));
    match failure {
        Some(f) => Err(f),
        None => Ok(positions),
    }
}

/// Before `abort_transaction`: purge the records still queued (an aborted transaction discards
/// them anyway) and serve the delivery reports of those already sent until none is
/// outstanding, for at most `timeout`; whether none is. librdkafka's abort purges and then waits
/// for the outstanding count to reach zero, but under the event API rust-rdkafka uses, only the
/// application serves the reports — and it is blocked in that very abort. Without this, an abort
/// with records outstanding lasted its whole timeout (30 s) and failed ("the event queue must be
/// polled"): measured in the hand-over bench, a survivor whose send_offsets met a new group
/// epoch took 42 s to block again after a kill -9.
pub fn drain_for_abort(producer: &BaseProducer<TrackingContext>, timeout: Duration) -> bool {
    producer.purge(rdkafka::producer::PurgeConfig::default().queue());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        producer.poll(Duration::from_millis(1));
    }
}

/// Wait until every record sent so far is acknowledged and its delivery report served.
///
/// rust-rdkafka's `BaseProducer::flush` (which `commit_transaction` calls first) polls in slices
/// of 100 ms and each `poll` lasts its whole timeout, so a flush with anything in flight costs at
/// least 100 ms. Waiting here in 1 ms slices instead leaves nothing for that flush to do and
/// takes a commit from ≥ 100 ms to a few ms. Each `flush(ZERO)` also tells librdkafka to send
/// lingering batches now.
pub fn deliver_all(
    producer: &BaseProducer<TrackingContext>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if std::time::Instant::now() < deadline =>
            {
                producer.poll(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use rdkafka::ClientConfig;

    /// A record for a partition whose leader is down stays outstanding; an abort without the
    /// drain waits for its report, which nobody serves, for its whole timeout, and fails.
    #[test]
    fn an_abort_after_the_drain_does_not_wait_for_reports_nobody_serves() {
        let mock = MockCluster::new(2).expect("mock cluster");
        mock.create_topic("out", 1, 1).unwrap();
        mock.coordinator(MockCoordinator::Transaction("t".into()), 1)
            .unwrap();
        let producer = |id: &str| -> BaseProducer<TrackingContext> {
            let p: BaseProducer<TrackingContext> = ClientConfig::new()
                .set("bootstrap.servers", mock.bootstrap_servers())
                .set("transactional.id", id)
                .set("log_level", "0")
                .create_with_context(TrackingContext(DeliveryTracker::new("changelog")))
                .unwrap();
            p.init_transactions(Duration::from_secs(10)).unwrap();
            p
        };
        let stuck = |p: &BaseProducer<TrackingContext>| {
            p.begin_transaction().unwrap();
            p.send(BaseRecord::<str, str>::to("out").key("k").payload("v"))
                .map_err(|(e, _)| e)
                .unwrap();
        };
        let (a, b) = (producer("t"), producer("t2"));
        mock.coordinator(MockCoordinator::Transaction("t2".into()), 1)
            .unwrap();
        // The partition's leader: the broker that is not the coordinator.
        mock.partition_leader("out", 0, Some(2)).unwrap();
        mock.broker_down(2).unwrap();

        stuck(&a);
        let started = std::time::Instant::now();
        assert!(
            a.abort_transaction(Duration::from_secs(2)).is_err(),
            "without the drain the abort times out"
        );
        assert!(started.elapsed() >= Duration::from_secs(2));

        stuck(&b);
        assert!(drain_for_abort(&b, Duration::from_secs(5)));
        b.abort_transaction(Duration::from_secs(5))
            .expect("the abort after the drain");
    }
}
