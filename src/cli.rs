//! `mailguard produce` and `mailguard tail`: the codec for people, so the pipeline can be seen
//! and driven by hand with JSON lines.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use serde_json::{json, Value};

use crate::codec::{Codec, RecordType};
use crate::config::Config;
use crate::kafka::{admin, client};
use crate::registry::codec_for;

/// Errors of the CLI tools; Display names the line or topic.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input line.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The topic's record type cannot be inferred.
    #[error("topic `{0}` is not a mailguard topic; pass --type")]
    UnknownTopic(String),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The wire format could not be set up (schema registry, writer schemas).
    #[error("{0}")]
    Wire(String),
    /// I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<rdkafka::error::KafkaError> for CliError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        CliError::Kafka(e.to_string())
    }
}

/// Arguments of `mailguard produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic (default: the verdicts topic).
    #[arg(long)]
    pub topic: Option<String>,
    /// Record type (default: inferred from the topic).
    #[arg(long = "type")]
    pub record_type: Option<String>,
}

/// Arguments of `mailguard tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Record type (default: inferred from the topic; the DLQ prints raw records).
    #[arg(long = "type")]
    pub record_type: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<usize>,
    /// Stop after this many seconds without a record (default: follow forever).
    #[arg(long)]
    pub idle_timeout: Option<f64>,
}

/// The record type that lives on a configured topic.
pub fn record_type_for_topic(cfg: &Config, topic: &str) -> Option<RecordType> {
    let t = &cfg.topics;
    Some(match topic {
        x if x == t.verdicts => RecordType::OutboundVerdict,
        x if x == t.mailboxes => RecordType::MailboxOwner,
        x if x == t.devices => RecordType::OwnerDevices,
        x if x == t.tenants => RecordType::TenantSettings,
        x if x == t.commands => RecordType::AdminCommand,
        x if x == t.blocks => RecordType::MailboxBlock,
        x if x == t.scan_requests => RecordType::ScanRequest,
        x if x == t.alerts => RecordType::Alert,
        x if x == t.events => RecordType::EventLogEntry,
        _ => return None,
    })
}

/// The key field of a record type (SPEC §2 keys).
fn key_field(rt: RecordType) -> &'static str {
    match rt {
        RecordType::OutboundVerdict
        | RecordType::MailboxOwner
        | RecordType::AdminCommand
        | RecordType::MailboxBlock
        | RecordType::EventLogEntry => "mailbox",
        RecordType::OwnerDevices => "owner_id",
        RecordType::TenantSettings | RecordType::Alert => "tenant_id",
        RecordType::ScanRequest => "device_id",
    }
}

fn resolve_type(cfg: &Config, topic: &str, given: Option<&str>) -> Result<RecordType, CliError> {
    match given {
        Some(name) => name
            .parse()
            .map_err(|_| CliError::UnknownTopic(format!("{topic} (type {name})"))),
        None => record_type_for_topic(cfg, topic)
            .ok_or_else(|| CliError::UnknownTopic(topic.to_string())),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replace `"now"` / `"now-<ms>"` / `"now+<ms>"` in the timestamp fields with epoch ms, so a
/// person can write a sample burst without computing times.
fn fill_now(v: &mut Value, now: i64) {
    if let Value::Object(map) = v {
        for field in ["sent_at", "issued_at"] {
            if let Some(Value::String(s)) = map.get(field) {
                let t = if s == "now" {
                    Some(now)
                } else if let Some(d) = s.strip_prefix("now-") {
                    d.parse::<i64>().ok().map(|d| now - d)
                } else if let Some(d) = s.strip_prefix("now+") {
                    d.parse::<i64>().ok().map(|d| now + d)
                } else {
                    None
                };
                if let Some(t) = t {
                    map.insert(field.to_string(), json!(t));
                }
            }
        }
    }
}

/// `mailguard produce`: JSON lines on stdin → Avro records keyed by the record's key field.
pub fn produce(cfg: &Config, args: &ProduceArgs) -> Result<(), CliError> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| cfg.topics.verdicts.clone());
    let rt = resolve_type(cfg, &topic, args.record_type.as_deref())?;
    // With a registry, the record type is registered under the topic's subject, as any
    // Confluent serializer would do.
    let codec =
        codec_for(cfg, &[(topic.as_str(), rt)]).map_err(|e| CliError::Wire(e.to_string()))?;
    let producer: BaseProducer = client::plain_producer(&cfg.kafka, "cli").create()?;
    let stdin = std::io::stdin();
    let mut n = 0usize;
    let mut buf = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut v: Value = serde_json::from_str(&line).map_err(|e| CliError::Line {
            line: i + 1,
            reason: e.to_string(),
        })?;
        fill_now(&mut v, now_ms());
        let key = v
            .get(key_field(rt))
            .and_then(Value::as_str)
            .map(|k| {
                if key_field(rt) == "mailbox" {
                    crate::policy::Mailbox::new(k).into_string()
                } else {
                    k.to_string()
                }
            })
            .ok_or_else(|| CliError::Line {
                line: i + 1,
                reason: format!("missing string field `{}`", key_field(rt)),
            })?;
        buf.clear();
        codec
            .json_to_avro(rt, &v, &mut buf)
            .map_err(|e| CliError::Line {
                line: i + 1,
                reason: e.to_string(),
            })?;
        let mut rec = BaseRecord::<str, [u8]>::to(&topic)
            .key(key.as_str())
            .payload(&buf);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    rec = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        n += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    eprintln!("produced {n} {} record(s) to {topic}", rt.name());
    Ok(())
}

/// `mailguard tail`: a topic's records (read_committed) → JSON lines on stdout.
pub fn tail(cfg: &Config, args: &TailArgs) -> Result<(), CliError> {
    let raw = args.topic == cfg.topics.dlq || args.topic == cfg.topics.changelog;
    let rt = if raw {
        None
    } else {
        Some(resolve_type(cfg, &args.topic, args.record_type.as_deref())?)
    };
    let codec: Codec = codec_for(cfg, &[]).map_err(|e| CliError::Wire(e.to_string()))?;
    let consumer: BaseConsumer = client::reader(&cfg.kafka, "tail")
        .set("enable.partition.eof", "false")
        .create()?;
    let partitions = admin::partition_count(&consumer, &args.topic)
        .map_err(|e| CliError::Kafka(e.to_string()))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&args.topic, p, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut n = 0usize;
    let mut last = Instant::now();
    loop {
        if args.max.is_some_and(|m| n >= m) {
            break;
        }
        if args
            .idle_timeout
            .is_some_and(|t| last.elapsed().as_secs_f64() >= t)
        {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        last = Instant::now();
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let value = match (rt, msg.payload()) {
            (_, None) => Value::Null,
            (Some(rt), Some(bytes)) => match codec.avro_to_json(rt, bytes) {
                Ok(v) => v,
                Err(e) => json!({ "undecodable": e.to_string() }),
            },
            (None, Some(bytes)) => {
                json!({ "bytes": bytes.len(), "utf8_lossy": String::from_utf8_lossy(bytes) })
            }
        };
        let mut line = json!({
            "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "key": key, "value": value,
        });
        if let Some(h) = msg.headers() {
            let headers: serde_json::Map<String, Value> = h
                .iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        json!(x.value.map(|v| String::from_utf8_lossy(v).into_owned())),
                    )
                })
                .collect();
            line["headers"] = Value::Object(headers);
        }
        writeln!(out, "{line}")?;
        out.flush()?;
        n += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_placeholders_are_filled() {
        let mut v = json!({"sent_at": "now-1000", "issued_at": "now", "other": "now"});
        fill_now(&mut v, 10_000);
        assert_eq!(
            v,
            json!({"sent_at": 9_000, "issued_at": 10_000, "other": "now"})
        );
    }

    #[test]
    fn every_input_and_output_topic_has_a_type() {
        let cfg = Config::default();
        for (topic, _) in cfg.topics.all() {
            if topic != cfg.topics.dlq && topic != cfg.topics.changelog {
                assert!(record_type_for_topic(&cfg, topic).is_some(), "{topic}");
            }
        }
    }
}
