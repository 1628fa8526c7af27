//! The dead-letter queue: where an input record goes when it cannot be processed (README
//! "Topics"). One path for every part that refuses records (the processor and the table loader):
//! it owns the topic, the size limit, the truncation of copies that would not fit, the headers
//! that say why and where from, and the event that logs and counts it
//! ([`crate::telemetry::events::DeadLettered`]: `mailguard_dlq_records_total{source, reason}`,
//! one rate-limited warning).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::BaseProducer;

use crate::config::Config;
use crate::kafka::client;
use crate::pipeline::sink::{
    deliver_all, take_deliveries, DeliveryError, DeliveryTracker, Header, ProducerSink, Sink,
    SinkError, TrackingContext,
};
use crate::store::Table;
use crate::telemetry::events::DeadLettered;
use crate::telemetry::{InternalEvent, Metrics};

/// Header of a DLQ record whose value (or key) was cut to fit `limits.max_record_bytes`: the
/// original sizes, `value=<bytes>,key=<bytes>`. The whole record is still in its source topic
/// (the other headers say where) for as long as that topic keeps it.
pub const TRUNCATED_HEADER: &str = "mailguard.dlq.truncated";

/// Room kept for the headers and the record framing when a DLQ copy is cut to size.
const DLQ_OVERHEAD: usize = 4096;

/// Longest reason header kept: a reason quotes the record (a key, an id).
const MAX_REASON_BYTES: usize = 1024;

/// Where a refused record came from: the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The verdict topic.
    Verdicts,
    /// The admin command topic.
    Commands,
    /// The endpoints' scan results (and their re-keyed copies).
    ScanResults,
    /// A directory or tenant table.
    Table(Table),
}

impl Source {
    /// Every source, for series that exist from the start.
    pub const ALL: [Source; 7] = [
        Source::Verdicts,
        Source::Commands,
        Source::ScanResults,
        Source::Table(Table::Owners),
        Source::Table(Table::Devices),
        Source::Table(Table::Tenants),
        Source::Table(Table::Exemptions),
    ];

    /// The label value: `verdicts`, `commands` or the table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Verdicts => "verdicts",
            Source::Commands => "commands",
            Source::ScanResults => "scan_results",
            Source::Table(t) => t.name(),
        }
    }
}

/// Why a record was refused, as a kind: the bounded `reason` label. The full reason, quoting the
/// record, goes in the record's `mailguard.error.reason` header and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No key.
    MissingKey,
    /// A key that is not a valid mailbox key or not UTF-8.
    InvalidKey,
    /// No value: a tombstone on an input topic.
    MissingValue,
    /// The value does not decode (wire format, schema, field values).
    Undecodable,
    /// The key names another entity than the record's body.
    KeyMismatch,
    /// A field is larger than `limits` allow.
    OverLimit,
    /// A scan result without the mailbox of its request: it cannot reach its incident.
    Unroutable,
}

impl Kind {
    /// Every kind, for series that exist from the start.
    pub const ALL: [Kind; 7] = [
        Kind::MissingKey,
        Kind::InvalidKey,
        Kind::MissingValue,
        Kind::Undecodable,
        Kind::KeyMismatch,
        Kind::OverLimit,
        Kind::Unroutable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingKey => "missing_key",
            Kind::InvalidKey => "invalid_key",
            Kind::MissingValue => "missing_value",
            Kind::Undecodable => "undecodable",
            Kind::KeyMismatch => "key_mismatch",
            Kind::OverLimit => "over_limit",
            Kind::Unroutable => "unroutable",
        }
    }
}

/// Why a record was refused: its kind and the words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The kind (the metric label).
    pub kind: Kind,
    /// The reason (the header and the log line).
    pub reason: String,
}

impl Refusal {
    /// A refusal of `kind`, saying `reason`.
    pub fn new(kind: Kind, reason: impl Into<String>) -> Self {
        Refusal {
            kind,
            reason: reason.into(),
        }
    }
}

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

/// The dead-letter topic and its limits, with the metrics the refusals are counted in.
#[derive(Clone)]
pub struct DeadLetterQueue {
    topic: String,
    max_record_bytes: usize,
    metrics: Metrics,
}

impl DeadLetterQueue {
    /// The DLQ of `topic`, whose copies fit in `max_record_bytes`.
    pub fn new(topic: &str, max_record_bytes: usize, metrics: Metrics) -> Self {
        DeadLetterQueue {
            topic: topic.to_string(),
            max_record_bytes,
            metrics,
        }
    }

    /// Logs and counts the refusal, and sends the DLQ copy through `sink`: the original key and
    /// bytes, the reason and source coordinates in headers. A copy larger than
    /// `max_record_bytes` is cut to fit (the value first, then the key) and says so in
    /// [`TRUNCATED_HEADER`]: a DLQ record the broker refuses would stop the pipeline on the very
    /// record it was meant to set aside.
    pub fn send(
        &self,
        sink: &mut impl Sink,
        source: Source,
        record: DeadLetter<'_>,
        refusal: &Refusal,
    ) -> Result<(), SinkError> {
        let reason = bounded_reason(&refusal.reason);
        DeadLettered {
            source,
            kind: refusal.kind,
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            reason: &reason,
        }
        .emit(&self.metrics);
        let budget = self.max_record_bytes.saturating_sub(DLQ_OVERHEAD);
        let value_len = record.payload.map_or(0, <[u8]>::len);
        let (key, payload, truncated) = if record.key.len() + value_len <= budget {
            (record.key, record.payload, None)
        } else {
            let key = &record.key[..record.key.len().min(budget)];
            let payload = record
                .payload
                .map(|p| &p[..p.len().min(budget - key.len())]);
            let sizes = format!("value={value_len},key={}", record.key.len());
            (key, payload, Some(sizes))
        };
        let owned = headers(&reason, &record);
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
        sink.send(&self.topic, key, payload, None, &headers)
    }
}

/// A reason of at most [`MAX_REASON_BYTES`] (cut at a character boundary, marked with `…`).
fn bounded_reason(reason: &str) -> std::borrow::Cow<'_, str> {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.into();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end]).into()
}

/// The DLQ headers (the contract with operators, README "Topics"): why the record was refused
/// and where it came from, so it can be found and replayed.
fn headers(reason: &str, record: &DeadLetter<'_>) -> [(&'static str, String); 4] {
    [
        ("mailguard.error.reason", reason.to_string()),
        ("mailguard.source.topic", record.topic.to_string()),
        ("mailguard.source.partition", record.partition.to_string()),
        ("mailguard.source.offset", record.offset.to_string()),
    ]
}

/// How long the delivery of a confirmed DLQ copy may take before its sender gives up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`DeadLetterQueue`] with its own (non-transactional) producer, for a reader that is not
/// part of the session's transaction (the table loader): its positions may move past a refused
/// record only once [`ConfirmedDlq::confirm`] says the copy is acknowledged.
pub struct ConfirmedDlq {
    queue: DeadLetterQueue,
    producer: BaseProducer<TrackingContext>,
    tracker: Arc<DeliveryTracker>,
    /// Records sent since the last confirmation.
    pending: usize,
}

impl ConfirmedDlq {
    /// The DLQ of `cfg`, produced to by a client named `role`.
    pub fn new(
        cfg: &Config,
        role: &str,
        metrics: Metrics,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let tracker = DeliveryTracker::new("");
        Ok(ConfirmedDlq {
            queue: DeadLetterQueue::new(&cfg.topics.dlq, cfg.limits.max_record_bytes, metrics),
            producer: client::plain_producer(&cfg.kafka, role)
                .create_with_context(TrackingContext(tracker.clone()))?,
            tracker,
            pending: 0,
        })
    }

    /// Sends the copy of a refused record (see [`DeadLetterQueue::send`]).
    pub fn send(
        &mut self,
        source: Source,
        record: DeadLetter<'_>,
        refusal: &Refusal,
    ) -> Result<(), SinkError> {
        let mut sink = ProducerSink {
            producer: &self.producer,
        };
        self.queue.send(&mut sink, source, record, refusal)?;
        self.pending += 1;
        Ok(())
    }

    /// Waits until every copy sent since the last call is acknowledged.
    pub fn confirm(&mut self) -> Result<(), DeliveryError> {
        if self.pending == 0 {
            return Ok(());
        }
        deliver_all(&self.producer, CONFIRM_TIMEOUT).map_err(DeliveryError::Flush)?;
        take_deliveries(&self.tracker)?;
        self.pending = 0;
        Ok(())
    }

    /// Serves delivery reports (call now and then, so the producer's queue never fills).
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sink::VecSink;

    fn record(payload: &[u8]) -> DeadLetter<'_> {
        DeadLetter {
            topic: "in",
            partition: 2,
            offset: 9,
            key: b"k",
            payload: Some(payload),
        }
    }

    #[test]
    fn a_refusal_is_counted_under_its_source_and_kind() {
        let metrics = Metrics::new();
        let dlq = DeadLetterQueue::new("dlq", 1 << 20, metrics.clone());
        let mut sink = VecSink::default();
        let refusal = Refusal::new(Kind::KeyMismatch, "key `k` does not match mailbox `x`");
        dlq.send(&mut sink, Source::Commands, record(b"v"), &refusal)
            .unwrap();
        let text = metrics.render();
        assert!(
            text.contains(
                "mailguard_dlq_records_total{reason=\"key_mismatch\",source=\"commands\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("mailguard_dlq_records_total{reason=\"over_limit\",source=\"owners\"} 0"),
            "every series exists from the start: {text}"
        );
        let r = &sink.records[0];
        assert_eq!((r.topic.as_str(), r.key.as_slice()), ("dlq", &b"k"[..]));
        assert_eq!(r.headers[0].1, refusal.reason.as_bytes());
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let dlq = DeadLetterQueue::new("dlq", 1 << 20, Metrics::new());
        let mut sink = VecSink::default();
        let refusal = Refusal::new(Kind::OverLimit, "é".repeat(1_000));
        dlq.send(&mut sink, Source::Verdicts, record(b"v"), &refusal)
            .unwrap();
        let reason = std::str::from_utf8(&sink.records[0].headers[0].1).unwrap();
        assert!(reason.ends_with('…'), "{reason}");
        assert_eq!(reason.len(), MAX_REASON_BYTES + '…'.len_utf8());
    }
}
