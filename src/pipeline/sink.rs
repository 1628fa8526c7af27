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
