//! One exactly-once session: a group consumer, a transactional producer and a processor.
//!
//! Every `commit_interval_ms` (or `max_batch_records`), the open transaction commits the records
//! the processor sent, the changelog records of the states it changed, and the input offsets
//! (`send_offsets_to_transaction` with the consumer's group metadata, so a zombie from an older
//! generation is fenced). Only then is local state written. On revocation the open transaction
//! commits inside the rebalance callback, before the partitions are given up; on assignment each
//! partition is restored from its changelog before any of its records is processed.
//!
//! Any failure ends the session: the transaction is aborted (or left to be aborted when the next
//! session's `init_transactions` fences it), uncommitted state is dropped, and `run` builds a new
//! session, which resumes from the committed offsets. This is simpler and safer than rewinding a
//! live consumer by hand.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::kafka::{client, KafkaError};
use crate::pipeline::processor::{InRecord, ProcessError, Processor};
use crate::pipeline::restore::{restore_partitions, RestoreError};
use crate::pipeline::sink::{
    deliver_all, take_deliveries, DeliveryTracker, ProducerSink, TrackingContext,
};
use crate::pipeline::watchdog::Watchdog;
use crate::store::StoreError;
use crate::telemetry::{Health, Metrics};
use crate::timers::Clock;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Processing failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// Restoring a partition failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// Local state failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction could not commit.
    #[error("transaction: {0}")]
    Transaction(String),
    /// Another instance uses our transactional id: a configuration error, not retried.
    #[error(
        "fenced: another instance uses transactional id `{0}` (kafka.instance_id must be unique)"
    )]
    Fenced(String),
}

impl From<RdError> for SessionError {
    fn from(e: RdError) -> Self {
        SessionError::Kafka(KafkaError::Client(e))
    }
}

impl SessionError {
    /// Whether building a new session can help. A missing ACL cannot be fixed by retrying:
    /// the process stops, `/healthz` fails, and the message names the grant to add.
    pub fn is_retriable(&self) -> bool {
        !matches!(
            self,
            SessionError::Fenced(_) | SessionError::Kafka(KafkaError::NotAuthorised { .. })
        )
    }
}

/// What a consumer error means for the session: `None` for the transient ones librdkafka
/// recovers from by itself (logged), an error to end the session otherwise. A fatal consumer
/// error (e.g. `FencedInstanceId` after a broker restart, when the broker still holds the old
/// member of our static `group.instance.id`) leaves a consumer that never fetches again: only a
/// new session — a new consumer — recovers, so it must not be merely logged.
fn consumer_error(e: RdError, cfg: &Config) -> Option<SessionError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let principal = crate::kafka::preflight::principal(cfg);
    match e.rdkafka_error_code() {
        Some(Code::GroupAuthorizationFailed) => {
            Some(SessionError::Kafka(KafkaError::NotAuthorised {
                principal,
                resource: format!("Group:{}", cfg.kafka.group_id),
                operation: "READ".into(),
                why: "mailguard's instances consume as one consumer group".into(),
            }))
        }
        Some(Code::TopicAuthorizationFailed) => {
            Some(SessionError::Kafka(KafkaError::NotAuthorised {
                principal,
                resource: format!(
                    "Topic:{} / Topic:{}",
                    cfg.topics.verdicts, cfg.topics.commands
                ),
                operation: "READ".into(),
                why: "mailguard consumes the input topics".into(),
            }))
        }
        _ if matches!(e, RdError::MessageConsumptionFatal(_)) => {
            warn!(error = %e, "fatal consumer error; starting a new session");
            Some(SessionError::Kafka(KafkaError::Client(e)))
        }
        _ => {
            warn!(error = %e, "consumer error");
            None
        }
    }
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Stored states one tick's sweep looks at (a few milliseconds of decoding).
const SWEEP_BUDGET: usize = 5_000;

/// Records handled per wake-up of the session loop before timers and commits are checked.
const BURST: usize = 512;

/// What the session and its rebalance callbacks share. The consumer's callbacks run inside
/// `poll`, on the session thread, while the loop holds no lock.
struct Core {
    cfg: Config,
    processor: Processor,
    producer: BaseProducer<TrackingContext>,
    tracker: Arc<DeliveryTracker>,
    metrics: Metrics,
    health: Health,
    clock: Arc<dyn Clock>,
    watchdog: Arc<Watchdog>,
    txn_open: bool,
    txn_started: Instant,
    /// Next offset per (is-commands-topic, partition): no allocation per record.
    offsets: HashMap<(bool, i32), i64>,
    records: usize,
    timestamps: Vec<i64>,
    failed: Option<SessionError>,
    /// Processor time at which the next idle-state sweep starts (or goes on).
    next_sweep: i64,
}

impl Core {
    fn begin(&mut self) -> Result<(), SessionError> {
        if !self.txn_open {
            self.producer.begin_transaction().map_err(txn_error)?;
            self.txn_open = true;
            self.txn_started = Instant::now();
        }
        Ok(())
    }

    /// Process one input record at `now` (read once per burst of records by the caller).
    fn handle(
        &mut self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        now: i64,
    ) -> Result<(), SessionError> {
        self.begin()?;
        let topic = m.topic();
        let rec = InRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp: m.timestamp().to_millis(),
        };
        let mut sink = ProducerSink {
            producer: &self.producer,
        };
        self.processor.handle(rec, now, &mut sink)?;
        let is_commands = topic != self.cfg.topics.verdicts;
        self.offsets
            .insert((is_commands, m.partition()), m.offset() + 1);
        self.records += 1;
        if let Some(ts) = rec.timestamp {
            if self.timestamps.len() < 100_000 {
                self.timestamps.push(ts);
            }
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), SessionError> {
        let now = self.clock.now_ms();
        if self.processor.next_deadline().is_some_and(|d| d <= now) {
            self.begin()?;
            let mut sink = ProducerSink {
                producer: &self.producer,
            };
            self.processor.tick(now, &mut sink)?;
        }
        if now >= self.next_sweep {
            let (forgotten, round_done) = self.processor.sweep(now, SWEEP_BUDGET)?;
            if forgotten > 0 {
                // Their tombstones go out with the next commit.
                self.begin()?;
            }
            if round_done {
                self.next_sweep = now + self.cfg.state.sweep_interval_ms as i64;
            }
        }
        Ok(())
    }

    /// How long the loop may wait for input: until the open transaction is due, and never past
    /// the next tick.
    fn poll_timeout(&self, next_tick: Instant) -> Duration {
        let tick = Duration::from_millis(self.cfg.state.tick_interval_ms);
        let to_commit = if self.txn_open {
            Duration::from_millis(self.cfg.kafka.commit_interval_ms)
                .saturating_sub(self.txn_started.elapsed())
        } else {
            tick
        };
        to_commit
            .min(next_tick.saturating_duration_since(Instant::now()))
            .min(tick)
    }

    fn due(&self) -> bool {
        self.txn_open
            && (self.records >= self.cfg.kafka.max_batch_records
                || self.txn_started.elapsed()
                    >= Duration::from_millis(self.cfg.kafka.commit_interval_ms))
    }

    /// Commit the open transaction (outputs + changelog + offsets), then write local state.
    fn commit(&mut self, cgm: Option<ConsumerGroupMetadata>) -> Result<(), SessionError> {
        if !self.txn_open {
            return Ok(());
        }
        let started = Instant::now();
        let now = self.clock.now_ms();
        let mut sink = ProducerSink {
            producer: &self.producer,
        };
        let mut batch = self.processor.prepare_commit(now, &mut sink)?;
        let stage_took = started.elapsed();
        let mut tpl = TopicPartitionList::new();
        for ((is_commands, p), next) in &self.offsets {
            let topic = if *is_commands {
                &self.cfg.topics.commands
            } else {
                &self.cfg.topics.verdicts
            };
            tpl.add_partition_offset(topic, *p, Offset::Offset(*next))?;
        }
        let deliver_started = Instant::now();
        deliver_all(&self.producer, TXN_TIMEOUT).map_err(txn_error)?;
        let offsets_started = Instant::now();
        self.metrics
            .stage("deliver", offsets_started - deliver_started);
        if tpl.count() > 0 {
            let cgm =
                cgm.ok_or_else(|| SessionError::Transaction("no consumer group metadata".into()))?;
            self.watchdog
                .guard("send_offsets_to_transaction", TXN_TIMEOUT, || {
                    self.producer
                        .send_offsets_to_transaction(&tpl, &cgm, TXN_TIMEOUT)
                })
                .map_err(txn_error)?;
        }
        let end_started = Instant::now();
        self.watchdog
            .guard("commit_transaction", TXN_TIMEOUT, || {
                self.producer.commit_transaction(TXN_TIMEOUT)
            })
            .map_err(txn_error)?;
        self.txn_open = false;
        // `deliver_all` above served every delivery report, so the changelog positions are
        // complete here.
        self.metrics
            .stage("send_offsets", end_started - offsets_started);
        self.metrics
            .stage("commit_transaction", end_started.elapsed());
        let committed_at = self.clock.now_ms();
        let positions = take_deliveries(&self.tracker).map_err(SessionError::Transaction)?;
        self.processor.stage_positions(&mut batch, &positions);
        let store_started = Instant::now();
        self.processor.store().write(batch)?;
        self.metrics.stage("store", store_started.elapsed());
        self.metrics.stage("stage_changelog", stage_took);
        self.metrics.committed(started.elapsed(), self.records);
        for ts in self.timestamps.drain(..) {
            self.metrics
                .processing_latency((committed_at - ts) as f64 / 1000.0);
        }
        // `committed` logs and counts the commit (one event, see telemetry::events).
        self.offsets.clear();
        self.records = 0;
        Ok(())
    }

    /// Abort after a failure, dropping everything uncommitted.
    fn abort(&mut self) {
        if self.txn_open {
            let aborted = self.watchdog.guard("abort_transaction", TXN_TIMEOUT, || {
                self.producer.abort_transaction(TXN_TIMEOUT)
            });
            if let Err(e) = aborted {
                warn!(error = %e, "abort failed; the next session's init_transactions fences it");
            }
            self.metrics.aborted();
            self.txn_open = false;
        }
        let _ = take_deliveries(&self.tracker);
        self.processor.discard_uncommitted();
        self.offsets.clear();
        self.records = 0;
        self.timestamps.clear();
    }
}

fn txn_error(e: RdError) -> SessionError {
    if let RdError::Transaction(ref inner) = e {
        if inner.is_fatal() && inner.code() == rdkafka::types::RDKafkaErrorCode::Fenced {
            return SessionError::Fenced(inner.to_string());
        }
    }
    SessionError::Transaction(e.to_string())
}

struct SessionContext {
    core: Arc<Mutex<Core>>,
}

impl SessionContext {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().expect("session core lock not poisoned")
    }
}

impl ClientContext for SessionContext {
    /// librdkafka statistics (`statistics.interval.ms`), delivered by `poll` on the session
    /// thread: the consumer lag of the owned input partitions.
    fn stats(&self, statistics: rdkafka::Statistics) {
        // The loop never holds the lock around `poll`; try_lock still keeps a statistics report
        // from ever waiting on the session (the next one comes in a few seconds).
        let Ok(core) = self.core.try_lock() else {
            return;
        };
        let metrics = core.metrics.clone();
        drop(core);
        metrics.set_consumer_lags(&crate::telemetry::lag::from_statistics(&statistics));
    }
}

impl ConsumerContext for SessionContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut core = self.lock();
        // Commit what was processed while we still own the partitions (and our generation is
        // still valid); the next owner resumes exactly after it.
        if let Err(e) = core.commit(consumer.group_metadata()) {
            error!(error = %e, "commit on revocation failed");
            core.abort();
            core.failed.get_or_insert(e);
        }
        let verdicts = core.cfg.topics.verdicts.clone();
        for e in tpl.elements().iter().filter(|e| e.topic() == verdicts) {
            core.processor.revoke(e.partition());
        }
        info!(partitions = ?tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect::<Vec<_>>(), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut core = self.lock();
                let partitions: BTreeSet<i32> =
                    tpl.elements().iter().map(|e| e.partition()).collect();
                core.health.set_ready(false);
                // Kafka Streams' order: committed offsets first, then restore. A read_committed
                // consumer's offset fetch is "stable" (KIP-447): it waits while a previous
                // owner's transaction holding offsets for these partitions is still open. Only
                // once it has committed or aborted does the changelog show all of its state
                // changes. Restoring first could stop short of them while the offsets, fetched
                // afterwards, skip the input that made them.
                if core.failed.is_none() {
                    let wait = Duration::from_millis(core.cfg.kafka.transaction_timeout_ms)
                        + Duration::from_secs(30);
                    if let Err(e) = consumer.committed_offsets((*tpl).clone(), wait) {
                        error!(error = %e, "committed offsets of the assigned partitions not available");
                        core.failed
                            .get_or_insert(SessionError::Kafka(KafkaError::Client(e)));
                    }
                }
                if core.failed.is_none() {
                    let partitions: Vec<i32> = partitions.into_iter().collect();
                    let (kafka, changelog, store) = (
                        core.cfg.kafka.clone(),
                        core.cfg.topics.changelog.clone(),
                        core.processor.store().clone(),
                    );
                    let result = restore_partitions(
                        &kafka,
                        &store,
                        &changelog,
                        &partitions,
                        Duration::from_secs(300),
                    )
                    .map_err(SessionError::from)
                    .and_then(|n| {
                        core.metrics.restored(n);
                        partitions
                            .iter()
                            .try_for_each(|&p| core.processor.assign(p).map_err(SessionError::from))
                    });
                    if let Err(e) = result {
                        error!(partitions = ?partitions, error = %e, "restore failed");
                        core.failed.get_or_insert(e);
                    }
                }
                info!(owned = ?core.processor.owned(), "partitions assigned");
                if core.failed.is_none() {
                    core.health.set_ready(true);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}

/// Everything a session needs that outlives it.
pub struct SessionDeps {
    /// Configuration.
    pub cfg: Config,
    /// Metrics.
    pub metrics: Metrics,
    /// Health.
    pub health: Health,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Watches the librdkafka calls that may outlive their timeout.
    pub watchdog: Arc<Watchdog>,
}

/// Run one session until `stop` is set (Ok) or something fails (Err).
pub fn run_session(
    deps: &SessionDeps,
    processor: Processor,
    stop: &AtomicBool,
) -> Result<(), SessionError> {
    let cfg = &deps.cfg;
    let (producer, tracker) = open_producer(cfg, &deps.watchdog)?;
    let core = Arc::new(Mutex::new(Core {
        cfg: cfg.clone(),
        processor,
        producer,
        tracker,
        metrics: deps.metrics.clone(),
        health: deps.health.clone(),
        clock: deps.clock.clone(),
        watchdog: deps.watchdog.clone(),
        txn_open: false,
        txn_started: Instant::now(),
        offsets: HashMap::new(),
        records: 0,
        timestamps: Vec::new(),
        failed: None,
        next_sweep: deps.clock.now_ms(),
    }));
    let consumer: BaseConsumer<SessionContext> = client::group_consumer(&cfg.kafka)
        .create_with_context(SessionContext { core: core.clone() })?;
    consumer.subscribe(&[&cfg.topics.verdicts, &cfg.topics.commands])?;
    info!(group = %cfg.kafka.group_id, transactional_id = %cfg.transactional_id(), "session started");

    let tick = Duration::from_millis(cfg.state.tick_interval_ms);
    let mut next_tick = Instant::now();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            let mut c = core.lock().expect("lock");
            break c.commit(consumer.group_metadata());
        }
        if let Some(e) = core.lock().expect("lock").failed.take() {
            break Err(e);
        }
        let timeout = core.lock().expect("lock").poll_timeout(next_tick);
        let step = handle_burst(&consumer, &core, deps, timeout).and_then(|()| {
            let mut c = core.lock().expect("lock");
            // Serve delivery reports once per burst, so the producer queue never fills up
            // between commits.
            c.producer.poll(Duration::ZERO);
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                c.tick()?;
            }
            if c.due() {
                c.commit(consumer.group_metadata())?;
            }
            Ok(())
        });
        if let Err(e) = step {
            break Err(e);
        }
    };
    {
        let mut c = core.lock().expect("lock");
        if result.is_err() {
            c.abort();
        }
        c.health.set_ready(false);
        c.health.rest();
    }
    // Leaving the group runs the revoke callback, which must find the lock free.
    consumer.unsubscribe();
    drop(consumer);
    result
}

/// The session's transactional producer, initialised: `init_transactions` fences any earlier
/// incarnation with our transactional id and aborts its open transaction.
fn open_producer(
    cfg: &Config,
    watchdog: &Watchdog,
) -> Result<(BaseProducer<TrackingContext>, Arc<DeliveryTracker>), SessionError> {
    let tracker = DeliveryTracker::new(&cfg.topics.changelog);
    let producer: BaseProducer<TrackingContext> =
        client::transactional_producer(&cfg.kafka, &cfg.transactional_id())
            .create_with_context(TrackingContext(tracker.clone()))?;
    watchdog
        .guard("init_transactions", TXN_TIMEOUT, || {
            producer.init_transactions(TXN_TIMEOUT)
        })
        .map_err(|e| match e.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => {
                SessionError::Kafka(KafkaError::NotAuthorised {
                    principal: crate::kafka::preflight::principal(cfg),
                    resource: format!("TransactionalId:{}", cfg.transactional_id()),
                    operation: "WRITE".into(),
                    why: "outputs, state and offsets commit in one transaction".into(),
                })
            }
            _ => txn_error(e),
        })?;
    Ok((producer, tracker))
}

/// Waits up to `timeout` for the next record, then handles whatever else is ready (up to
/// `BURST`) without waiting. Clock reads, timer and commit checks happen once per burst, in the
/// caller: per record they were a fifth of the pipeline thread's time. The lock is released
/// around every poll because poll may run the rebalance callbacks, which take it.
fn handle_burst(
    consumer: &BaseConsumer<SessionContext>,
    core: &Mutex<Core>,
    deps: &SessionDeps,
    timeout: Duration,
) -> Result<(), SessionError> {
    let mut next = consumer.poll(timeout);
    deps.health.beat();
    let now = deps.clock.now_ms();
    let mut handled = 0;
    while let Some(polled) = next.take() {
        match polled {
            Ok(m) => core.lock().expect("lock").handle(&m, now)?,
            Err(e) => {
                if let Some(fatal) = consumer_error(e, &deps.cfg) {
                    return Err(fatal);
                }
            }
        }
        handled += 1;
        if handled >= BURST {
            break;
        }
        next = consumer.poll(Duration::ZERO);
    }
    Ok(())
}
