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

/// The DLQ headers (the contract with operators, README "Topics"): why the record was refused
/// and where it came from, so it can be found and replayed.
fn dlq_headers(
    reason: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> [(&'static str, String); 4] {
    [
        ("mailguard.error.reason", reason.to_string()),
        ("mailguard.source.topic", topic.to_string()),
        ("mailguard.source.partition", partition.to_string()),
        ("mailguard.source.offset", offset.to_string()),
    ]
}

/// Header of a DLQ record whose value (or key) was cut to fit `limits.max_record_bytes`: the
/// original sizes, `value=<bytes>,key=<bytes>`. The whole record is still in its source topic
/// (the other headers say where) for as long as that topic keeps it.
pub const TRUNCATED_HEADER: &str = "mailguard.dlq.truncated";

/// Room kept for the headers and the record framing when a DLQ copy is cut to size.
const DLQ_OVERHEAD: usize = 4096;

/// An input record refused by the processor or a table loader.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Original key (empty if none).
    pub key: &'a [u8],
    /// Original value (`None`: a tombstone).
    pub payload: Option<&'a [u8]>,
}

impl DeadLetter<'_> {
    /// Sends the DLQ copy through `sink`: the original key and bytes, the reason and source
    /// coordinates in headers. A copy larger than `max_record_bytes` is cut to fit (the value
    /// first, then the key) and says so in [`TRUNCATED_HEADER`]: a DLQ record the broker refuses
    /// would stop the pipeline on the very record it was meant to set aside.
    pub fn send(
        &self,
        sink: &mut impl Sink,
        dlq_topic: &str,
        reason: &str,
        max_record_bytes: usize,
    ) -> Result<(), SinkError> {
        let mut reason = reason;
        let budget = max_record_bytes.saturating_sub(DLQ_OVERHEAD);
        // A reason quotes the record (a key, an id): it gets a bounded share of the budget too.
        let reason_cut;
        if reason.len() > 1024 {
            let mut end = 1024;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason_cut = format!("{}…", &reason[..end]);
            reason = &reason_cut;
        }
        let value_len = self.payload.map_or(0, <[u8]>::len);
        let (key, payload, truncated) = if self.key.len() + value_len <= budget {
            (self.key, self.payload, None)
        } else {
            let key = &self.key[..self.key.len().min(budget)];
            let payload = self.payload.map(|p| &p[..p.len().min(budget - key.len())]);
            (
                key,
                payload,
                Some(format!("value={value_len},key={}", self.key.len())),
            )
        };
        let owned = dlq_headers(reason, self.topic, self.partition, self.offset);
        let mut headers: Vec<Header<'_>> = owned
            .iter()
            .map(|(key, value)| Header {
                key,
                value: value.as_bytes(),
            })
            .collect();
        if let Some(t) = &truncated {
            headers.push(Header {
                key: TRUNCATED_HEADER,
                value: t.as_bytes(),
            });
        }
        sink.send(dlq_topic, key, payload, None, &headers)
    }
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
    Encode(String),
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
    failures: Mutex<Vec<String>>,
}

impl DeliveryTracker {
    /// Track deliveries to `changelog`.
    pub fn new(changelog: &str) -> Arc<Self> {
        Arc::new(DeliveryTracker {
            changelog: changelog.to_string(),
            positions: Mutex::new(HashMap::new()),
            failures: Mutex::new(Vec::new()),
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
                    .failures
                    .lock()
                    .expect("not poisoned")
                    .push(format!("{}: {e}", m.topic()));
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
pub fn take_deliveries(tracker: &DeliveryTracker) -> Result<HashMap<i32, i64>, String> {
    let failures = std::mem::take(&mut *tracker.failures.lock().expect("not poisoned"));
    let positions = std::mem::take(&mut *tracker.positions.lock().expect("not poisoned"));
    match failures.into_iter().next() {
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
