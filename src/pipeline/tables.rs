//! The directory and tenant tables: compacted topics read in full by every instance (they are
//! keyed by owner or tenant, not by mailbox, so they cannot follow the input partitions) into
//! the local cache, from the last stored position. Verdict processing starts only once every
//! table partition has been read to its end once (SPEC: "loaded before verdict processing
//! starts"); after that the loader keeps following the topics in the background.
//!
//! Table updates are idempotent upserts, so at-least-once is enough here: the position is stored
//! in the same RocksDB batch as the values it covers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::BaseProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::codec::{Codec, OwnerDevices};
use crate::config::Config;
use crate::kafka::{admin, client, KafkaError};
use crate::pipeline::directory::TenantMap;
use crate::pipeline::sink::{
    deliver_all, take_deliveries, DeadLetter, DeliveryTracker, ProducerSink, TrackingContext,
};
use crate::policy::{LimitError, Limits, Owner, TenantSettings};
use crate::store::{Batch, Store, StoreError, Table};
use crate::telemetry::events::DeadLettered;
use crate::telemetry::{InternalEvent, Metrics};

/// Errors of the table loader.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A table record could not be set aside in the DLQ.
    #[error("table DLQ: {0}")]
    Dlq(String),
}

impl From<RdError> for TableError {
    fn from(e: RdError) -> Self {
        TableError::Kafka(KafkaError::Client(e))
    }
}

struct TableReader {
    table: Table,
    topic: String,
    consumer: BaseConsumer<client::ReaderContext>,
    at_end: HashSet<i32>,
    partitions: i32,
    /// For messages naming a missing ACL.
    principal: String,
    group: String,
}

/// Handle of the running loader.
pub struct TableLoader {
    /// Receives `()` once every table has been read to its end once.
    pub loaded: mpsc::Receiver<()>,
    /// The loader thread; ends when `stop` is set.
    pub thread: std::thread::JoinHandle<Result<(), TableError>>,
}

/// Load tenant settings cached in RocksDB into memory (before the topics catch up).
fn warm_tenants(store: &Store, codec: &Codec, tenants: &TenantMap) -> Result<(), TableError> {
    let mut map = tenants.write().expect("tenant lock");
    store.for_each_table(Table::Tenants, |_, bytes| {
        if let Ok((id, t)) = codec.decode_tenant(bytes) {
            map.insert(id, t);
        }
    })?;
    Ok(())
}

/// Start the loader thread.
pub fn spawn(
    cfg: &Config,
    store: Store,
    codec: Codec,
    tenants: TenantMap,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> Result<TableLoader, TableError> {
    warm_tenants(&store, &codec, &tenants)?;
    let mut readers = Vec::new();
    for (table, topic) in [
        (Table::Owners, &cfg.topics.mailboxes),
        (Table::Devices, &cfg.topics.devices),
        (Table::Tenants, &cfg.topics.tenants),
    ] {
        let consumer: BaseConsumer<client::ReaderContext> =
            client::reader(&cfg.kafka, &format!("table-{}", table.name()))
                .create_with_context(client::ReaderContext)?;
        let partitions = admin::partition_count(&consumer, topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let offset = match store.table_position(topic, p)? {
                Some(o) => Offset::Offset(o),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(topic, p, offset)?;
        }
        consumer.assign(&tpl)?;
        readers.push(TableReader {
            table,
            topic: topic.clone(),
            consumer,
            at_end: HashSet::new(),
            partitions,
            principal: crate::kafka::preflight::principal(cfg),
            group: client::reader_group(&cfg.kafka, &format!("table-{}", table.name())),
        });
    }
    let tracker = DeliveryTracker::new("");
    let mut dlq = TableDlq {
        producer: client::plain_producer(&cfg.kafka, "tables-dlq")
            .create_with_context(TrackingContext(tracker.clone()))?,
        tracker,
        topic: cfg.topics.dlq.clone(),
        limits: cfg.limits.clone(),
        pending: 0,
    };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("mailguard-tables".into())
        .spawn(move || {
            let mut loaded_sent = false;
            let result = (|| {
                while !stop.load(Ordering::Relaxed) {
                    for r in readers.iter_mut() {
                        poll_table(r, &store, &codec, &tenants, &metrics, &mut dlq, &stop)?;
                    }
                    if !loaded_sent
                        && readers
                            .iter()
                            .all(|r| r.at_end.len() as i32 >= r.partitions)
                    {
                        info!("tables loaded");
                        let _ = tx.send(());
                        loaded_sent = true;
                    }
                    dlq.producer.poll(Duration::ZERO);
                }
                Ok(())
            })();
            if let Err(e) = &result {
                // A stale directory must not look healthy: stopping the pipeline fails
                // /healthz and ends the process with this error, and its restart reads the
                // tables from the last stored position again.
                error!(error = %e, "table loader failed; stopping");
                metrics.table_loader_failed();
                stop.store(true, Ordering::Relaxed);
            }
            result
        })
        .expect("spawn table loader thread");
    Ok(TableLoader { loaded: rx, thread })
}

impl TableReader {
    /// The missing ACL an error reports, if it is one.
    fn not_authorised(&self, e: &RdError) -> Option<KafkaError> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let (resource, operation) = match e.rdkafka_error_code()? {
            Code::TopicAuthorizationFailed => (format!("Topic:{}", self.topic), "READ"),
            Code::GroupAuthorizationFailed => (format!("Group:{}", self.group), "DESCRIBE"),
            _ => return None,
        };
        Some(KafkaError::NotAuthorised {
            principal: self.principal.clone(),
            resource,
            operation: operation.into(),
            why: format!("mailguard reads the {} table", self.table.name()),
        })
    }
}

/// Read what is available of one table (up to a bounded batch), apply it, store the positions.
#[allow(clippy::too_many_arguments)]
fn poll_table(
    r: &mut TableReader,
    store: &Store,
    codec: &Codec,
    tenants: &TenantMap,
    metrics: &Metrics,
    dlq: &mut TableDlq,
    stop: &AtomicBool,
) -> Result<(), TableError> {
    let mut batch = Batch::new();
    let mut timeout = Duration::from_millis(50);
    for _ in 0..5_000 {
        let msg = match r.consumer.poll(timeout) {
            None => break,
            Some(Err(RdError::PartitionEOF(p))) => {
                r.at_end.insert(p);
                continue;
            }
            Some(Err(e)) => {
                // A missing ACL would otherwise stall the table for good behind a warning.
                if let Some(missing) = r.not_authorised(&e) {
                    return Err(TableError::Kafka(missing));
                }
                warn!(topic = %r.topic, error = %e, "table consumer error");
                break;
            }
            Some(Ok(m)) => m,
        };
        timeout = Duration::ZERO;
        let (p, offset) = (msg.partition(), msg.offset());
        store.stage_table_position(&mut batch, &r.topic, p, offset + 1);
        let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
        let dead_letter = DeadLetter {
            topic: &r.topic,
            partition: p,
            offset,
            key: msg.key().unwrap_or_default(),
            payload: msg.payload(),
        };
        let Some(key) = key else {
            dlq.send(r.table, dead_letter, "missing or non-UTF-8 key", metrics)?;
            continue;
        };
        // Upserts and tombstones are stored under the key (a mailbox normalised): the same entity
        // is then replaced and deleted by the same record key, whatever its body says.
        let key = r.table.id_of_key(key);
        let Some(payload) = msg.payload() else {
            // Tombstone: the entity is gone.
            store.stage_table(&mut batch, r.table, &key, None);
            if r.table == Table::Tenants {
                tenants.write().expect("tenant lock").remove(&key);
            }
            metrics.table_record(r.table.name());
            continue;
        };
        // A writer schema the registry cannot serve right now is waited for, never
        // dead-lettered: a registry outage must not turn good directory records into dead
        // letters. The table stalls meanwhile (and says so); on shutdown the batch is dropped
        // unwritten, so these records are read again at the next start.
        let mut backoff = Duration::from_millis(200);
        let decoded = loop {
            match decode_table(r.table, codec, payload) {
                Err(e) if e.is_transient() => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    warn!(topic = %r.topic, partition = p, offset, error = %e, "writer schema unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => break other.map_err(|e| e.to_string()),
            }
        };
        let checked = decoded.and_then(|record| checked(record, &key, &dlq.limits));
        match checked {
            Ok(record) => {
                if let TableRecord::Tenant(_, t) = record {
                    tenants.write().expect("tenant lock").insert(key.clone(), t);
                }
                store.stage_table(&mut batch, r.table, &key, Some(payload));
                metrics.table_record(r.table.name());
            }
            Err(reason) => dlq.send(r.table, dead_letter, &reason, metrics)?,
        }
    }
    // At least once: the positions move past a dead-lettered record only once its DLQ copy is
    // acknowledged. A copy that cannot be delivered fails the loader (and /healthz); the restart
    // reads the record again.
    dlq.confirm()?;
    store.write(batch)?;
    Ok(())
}

/// `record`, read under `key` (normalised), if it may be applied: its fields within the limits
/// and keyed by its own id. Else why not (the loader dead-letters it; the API's view skips it).
pub(crate) fn checked(
    record: TableRecord,
    key: &str,
    limits: &Limits,
) -> Result<TableRecord, String> {
    let id = record.checked_id(limits).map_err(|e| e.to_string())?;
    if id == key {
        Ok(record)
    } else {
        Err(format!("key `{key}` does not match the record's id `{id}`"))
    }
}

/// A decoded table record.
pub(crate) enum TableRecord {
    Owner(String, Owner),
    Devices(OwnerDevices),
    Tenant(String, TenantSettings),
}

impl TableRecord {
    /// The id in its body (what it must be keyed by), once its fields are within the limits.
    fn checked_id(&self, limits: &Limits) -> Result<&str, LimitError> {
        match self {
            TableRecord::Owner(mailbox, o) => limits.owner(mailbox, o).map(|()| mailbox.as_str()),
            TableRecord::Devices(d) => limits
                .devices(&d.owner_id, &d.tenant_id, &d.device_ids)
                .map(|()| d.owner_id.as_str()),
            TableRecord::Tenant(id, t) => limits.tenant(id, t).map(|()| id.as_str()),
        }
    }
}

fn decode_table(
    table: Table,
    codec: &Codec,
    payload: &[u8],
) -> Result<TableRecord, crate::codec::CodecError> {
    Ok(match table {
        Table::Owners => {
            let (mailbox, o) = codec.decode_owner(payload)?;
            TableRecord::Owner(mailbox, o)
        }
        Table::Devices => TableRecord::Devices(codec.decode_devices(payload)?),
        Table::Tenants => {
            let (id, t) = codec.decode_tenant(payload)?;
            TableRecord::Tenant(id, t)
        }
    })
}

/// The table loader's DLQ: the same dead-letter record and the same producer path as the
/// session's ([`DeadLetter::send`] through a [`ProducerSink`]), delivery confirmed before the
/// table positions move.
struct TableDlq {
    producer: BaseProducer<TrackingContext>,
    tracker: Arc<DeliveryTracker>,
    topic: String,
    limits: Limits,
    /// Records sent since the last confirmation.
    pending: usize,
}

impl TableDlq {
    fn send(
        &mut self,
        table: Table,
        record: DeadLetter<'_>,
        reason: &str,
        metrics: &Metrics,
    ) -> Result<(), TableError> {
        DeadLettered {
            source: table.name(),
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            reason,
        }
        .emit(metrics);
        let mut sink = ProducerSink {
            producer: &self.producer,
        };
        record
            .send(&mut sink, &self.topic, reason, self.limits.max_record_bytes)
            .map_err(|e| TableError::Dlq(e.to_string()))?;
        self.pending += 1;
        Ok(())
    }

    /// Waits until every DLQ record sent since the last call is acknowledged.
    fn confirm(&mut self) -> Result<(), TableError> {
        if self.pending == 0 {
            return Ok(());
        }
        deliver_all(&self.producer, DLQ_TIMEOUT)
            .map_err(|e| TableError::Dlq(format!("DLQ delivery not confirmed: {e}")))?;
        take_deliveries(&self.tracker).map_err(TableError::Dlq)?;
        self.pending = 0;
        Ok(())
    }
}

/// How long a table DLQ delivery may take before the loader gives up.
const DLQ_TIMEOUT: Duration = Duration::from_secs(30);
