//! The directory and tenant tables: compacted topics read in full by every instance (they are
//! keyed by owner or tenant, not by mailbox, so they cannot follow the input partitions) into
//! the local cache, from the last stored position. Verdict processing starts only once every
//! table partition has been read to its end once (SPEC: "loaded before verdict processing
//! starts"); after that the loader keeps following the topics in the background.
//!
//! Table updates are idempotent upserts, so at-least-once is enough here: the position is stored
//! in the same RocksDB batch as the values it covers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError as RdError;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tracing::{info, warn};

use crate::codec::{Codec, OwnerDevices};
use crate::config::Config;
use crate::kafka::reader::{Read, ReadError, Start, TopicReader};
use crate::kafka::KafkaError;
use crate::pipeline::directory::{ExemptionMap, OverBound, TenantMap};
use crate::pipeline::dlq::{ConfirmedDlq, DeadLetter, Kind, Refusal, Source};
use crate::pipeline::sink::{DeliveryError, SinkError};
use crate::policy::{Exemption, LimitError, Limits, Owner, TenantSettings};
use crate::store::{Batch, Store, StoreError, Table};
use crate::telemetry::events::{TableLoaderFailed, TableRecordApplied};
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
    Dlq(#[from] SinkError),
    /// A table record's DLQ copy was not acknowledged.
    #[error("table DLQ: {0}")]
    DlqDelivery(#[from] DeliveryError),
}

impl From<RdError> for TableError {
    fn from(e: RdError) -> Self {
        TableError::Kafka(KafkaError::Client(e))
    }
}

struct TableReader {
    table: Table,
    reader: TopicReader,
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

/// Load the exemptions cached in RocksDB into memory (before the topic catches up).
fn warm_exemptions(
    store: &Store,
    codec: &Codec,
    exemptions: &ExemptionMap,
    max: usize,
) -> Result<(), TableError> {
    let mut map = exemptions.write().expect("exemption lock");
    store.for_each_table(Table::Exemptions, |key, bytes| {
        if let Ok(e) = codec.decode_exemption(bytes) {
            let _ = map.upsert(key, e, max);
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
    exemptions: ExemptionMap,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> Result<TableLoader, TableError> {
    warm_tenants(&store, &codec, &tenants)?;
    let max = cfg.limits.max_exemptions_per_tenant;
    warm_exemptions(&store, &codec, &exemptions, max)?;
    let mut readers = [
        (Table::Owners, &cfg.topics.mailboxes),
        (Table::Devices, &cfg.topics.devices),
        (Table::Tenants, &cfg.topics.tenants),
        (Table::Exemptions, &cfg.topics.exemptions),
    ]
    .into_iter()
    .map(|(table, topic)| TableReader::open(cfg, &store, table, topic))
    .collect::<Result<Vec<_>, _>>()?;
    let mut tables = Tables {
        store,
        codec,
        tenants,
        exemptions,
        metrics: metrics.clone(),
        limits: cfg.limits.clone(),
        dlq: ConfirmedDlq::new(cfg, "tables-dlq", metrics.clone())?,
    };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("mailguard-tables".into())
        .spawn(move || {
            let mut loaded_sent = false;
            let result = (|| {
                while !stop.load(Ordering::Relaxed) {
                    for r in readers.iter_mut() {
                        poll_table(r, &mut tables, &stop)?;
                    }
                    if !loaded_sent && readers.iter().all(|r| r.reader.loaded()) {
                        info!("tables loaded");
                        let _ = tx.send(());
                        loaded_sent = true;
                    }
                    tables.dlq.poll();
                }
                Ok(())
            })();
            if let Err(e) = &result {
                // A stale directory must not look healthy: stopping the pipeline fails
                // /healthz and ends the process with this error, and its restart reads the
                // tables from the last stored position again.
                TableLoaderFailed { error: e }.emit(&metrics);
                stop.store(true, Ordering::Relaxed);
            }
            result
        })
        .expect("spawn table loader thread");
    Ok(TableLoader { loaded: rx, thread })
}

impl TableReader {
    /// A reader of `table` from `topic`, assigned from the positions stored in `store`.
    fn open(cfg: &Config, store: &Store, table: Table, topic: &str) -> Result<Self, TableError> {
        let why = format!("mailguard reads the {} table", table.name());
        let mut reader =
            TopicReader::new(&cfg.kafka, &format!("table-{}", table.name()), topic, &why)?;
        reader.assign_all(|p| {
            Ok::<_, TableError>(match store.table_position(topic, p)? {
                Some(o) => Start::At(o),
                None => Start::Beginning,
            })
        })?;
        Ok(TableReader { table, reader })
    }
}

/// Where table records go: the local cache, the tenant map and, for bad ones, the DLQ.
struct Tables {
    store: Store,
    codec: Codec,
    tenants: TenantMap,
    exemptions: ExemptionMap,
    metrics: Metrics,
    limits: Limits,
    dlq: ConfirmedDlq,
}

/// Read what is available of one table (up to a bounded batch), apply it, store the positions.
fn poll_table(r: &mut TableReader, t: &mut Tables, stop: &AtomicBool) -> Result<(), TableError> {
    let mut batch = Batch::new();
    let mut timeout = Duration::from_millis(50);
    for _ in 0..5_000 {
        let msg = match r.reader.poll(timeout) {
            Ok(None) => break,
            Ok(Some(Read::End(_))) => continue,
            // A missing ACL would otherwise stall the table for good behind a warning.
            Err(ReadError::NotAuthorised(missing)) => return Err(TableError::Kafka(missing)),
            Err(e) => {
                warn!(topic = %r.reader.topic(), error = %e, "table consumer error");
                break;
            }
            Ok(Some(Read::Record(m))) => m,
        };
        timeout = Duration::ZERO;
        t.store
            .stage_table_position(&mut batch, msg.topic(), msg.partition(), msg.offset() + 1);
        if !t.apply(r.table, &msg, &mut batch, stop)? {
            // Stopping while the registry is away: the batch is dropped unwritten, so these
            // records are read again at the next start.
            return Ok(());
        }
    }
    // At least once: the positions move past a dead-lettered record only once its DLQ copy is
    // acknowledged. A copy that cannot be delivered fails the loader (and /healthz); the restart
    // reads the record again.
    t.dlq.confirm()?;
    t.store.write(batch)?;
    Ok(())
}

impl Tables {
    /// Stage one table record (or its DLQ copy). `false`: stopped while waiting for the
    /// registry, nothing staged.
    fn apply(
        &mut self,
        table: Table,
        msg: &BorrowedMessage<'_>,
        batch: &mut Batch,
        stop: &AtomicBool,
    ) -> Result<bool, TableError> {
        let dead_letter = DeadLetter {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().unwrap_or_default(),
            payload: msg.payload(),
        };
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            let kind = if msg.key().is_none() {
                Kind::MissingKey
            } else {
                Kind::InvalidKey
            };
            let refusal = Refusal::new(kind, "missing or non-UTF-8 key");
            self.dlq.send(Source::Table(table), dead_letter, &refusal)?;
            return Ok(true);
        };
        // Upserts and tombstones are stored under the key (a mailbox normalised): the same entity
        // is then replaced and deleted by the same record key, whatever its body says.
        let key = table.id_of_key(key);
        let Some(payload) = msg.payload() else {
            // Tombstone: the entity is gone.
            self.store.stage_table(batch, table, &key, None);
            if table == Table::Tenants {
                self.tenants.write().expect("tenant lock").remove(&key);
            }
            if table == Table::Exemptions {
                self.exemptions
                    .write()
                    .expect("exemption lock")
                    .remove(&key);
            }
            TableRecordApplied { table }.emit(&self.metrics);
            return Ok(true);
        };
        let Some(decoded) = self.decode(table, payload, &dead_letter, stop) else {
            return Ok(false);
        };
        match decoded
            .and_then(|record| checked(record, &key, &self.limits))
            .and_then(|record| self.hold(record, &key))
        {
            Ok(()) => {
                self.store.stage_table(batch, table, &key, Some(payload));
                TableRecordApplied { table }.emit(&self.metrics);
            }
            Err(refusal) => self.dlq.send(Source::Table(table), dead_letter, &refusal)?,
        }
        Ok(true)
    }

    /// Keeps what the tables hold in memory (tenant settings, exemptions up to their bound).
    fn hold(&self, record: TableRecord, key: &str) -> Result<(), Refusal> {
        match record {
            TableRecord::Tenant(_, t) => {
                self.tenants
                    .write()
                    .expect("tenant lock")
                    .insert(key.to_owned(), t);
            }
            TableRecord::Exemption(_, e) => {
                let max = self.limits.max_exemptions_per_tenant;
                let held = self
                    .exemptions
                    .write()
                    .expect("exemption lock")
                    .upsert(key, e, max);
                held.map_err(|OverBound| {
                    let reason = format!(
                        "the tenant holds {max} exemptions already (limits.max_exemptions_per_tenant)"
                    );
                    Refusal::new(Kind::OverLimit, reason)
                })?;
            }
            TableRecord::Owner(..) | TableRecord::Devices(_) => {}
        }
        Ok(())
    }

    /// Decodes a table record. A writer schema the registry cannot serve right now is waited
    /// for, never dead-lettered: a registry outage must not turn good directory records into
    /// dead letters. The table stalls meanwhile (and says so); `None` if `stop` is set then.
    fn decode(
        &self,
        table: Table,
        payload: &[u8],
        at: &DeadLetter<'_>,
        stop: &AtomicBool,
    ) -> Option<Result<TableRecord, Refusal>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match decode_table(table, &self.codec, payload) {
                Err(e) if e.is_transient() => {
                    if stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    warn!(topic = %at.topic, partition = at.partition, offset = at.offset, error = %e, "writer schema unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => {
                    return Some(other.map_err(|e| Refusal::new(Kind::Undecodable, e.to_string())))
                }
            }
        }
    }
}

/// `record`, read under `key` (normalised), if it may be applied: its fields within the limits
/// and keyed by its own id. Else why not (the loader dead-letters it; the API's view skips it).
pub(crate) fn checked(
    record: TableRecord,
    key: &str,
    limits: &Limits,
) -> Result<TableRecord, Refusal> {
    let id = record
        .checked_id(limits)
        .map_err(|e| Refusal::new(Kind::OverLimit, e.to_string()))?;
    if id != key {
        let reason = format!("key `{key}` does not match the record's id `{id}`");
        return Err(Refusal::new(Kind::KeyMismatch, reason));
    }
    Ok(record)
}

/// A decoded table record.
pub(crate) enum TableRecord {
    Owner(String, Owner),
    Devices(OwnerDevices),
    Tenant(String, TenantSettings),
    /// Keyed by `tenant/pattern`.
    Exemption(String, Exemption),
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
            TableRecord::Exemption(key, e) => limits.exemption(e).map(|()| key.as_str()),
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
        Table::Exemptions => {
            let e = codec.decode_exemption(payload)?;
            TableRecord::Exemption(Exemption::table_key(&e.tenant_id, &e.pattern), e)
        }
    })
}
