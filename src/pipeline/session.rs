//! One exactly-once session: a group consumer, a transactional producer and a processor.
//!
//! Records are taken from the consumer in batches ([`crate::kafka::batch`]): one lock, one clock
//! reading and one timer/commit check per batch, not per record.
//!
//! Every `commit_interval_ms` (or `max_batch_records`), the open transaction commits the records
//! the processor sent, the changelog records of the states it changed, and the input offsets
//! (`send_offsets_to_transaction` with the consumer's group metadata, so a zombie from an older
//! generation is fenced). A transaction holding a block or unblock does not wait for the interval:
//! it commits `trip_commit_gap_ms` after the previous commit ended, so a trip is blocked in
//! milliseconds while CLEAN traffic keeps the interval's cost. Only then is local state written.
//! On revocation the open transaction commits inside the rebalance callback, before the
//! partitions are given up; on assignment each partition is routed to the fetch queue and
//! restored from its changelog before any of its records is processed.
//!
//! Any failure ends the session: the transaction is aborted (or left to be aborted when the next
//! session's `init_transactions` fences it), uncommitted state is dropped, and `run` builds a new
//! session, which resumes from the committed offsets. This is simpler and safer than rewinding a
//! live consumer by hand. Only a transactional call librdkafka says may simply be made again is
//! retried in place first ([`crate::pipeline::txn::decide`]).
//!
//! The commit interval and the tick run on the injected clock's monotonic time (`Cadence`), so
//! a manual clock drives them in tests.

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
use crate::kafka::batch::{Batch, FetchQueue};
use crate::kafka::{client, KafkaError};
use crate::pipeline::processor::{InRecord, ProcessError, Processor};
use crate::pipeline::restore::{restore_partitions, RestoreError};
use crate::pipeline::sink::{
    deliver_all, drain_for_abort, take_deliveries, DeliveryError, DeliveryTracker, ProducerSink,
    TrackingContext,
};
use crate::pipeline::txn::{self, Action, TxnError, TxnOp};
use crate::pipeline::watchdog::Watchdog;
use crate::store::StoreError;
use crate::telemetry::events::{PartitionsRestored, Stage, StageTimed};
use crate::telemetry::{Health, InternalEvent, Metrics};
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
    /// A transactional call failed (librdkafka's classification and the decision kept).
    #[error(transparent)]
    Transaction(#[from] TxnError),
    /// A record of the transaction was not delivered.
    #[error("transaction: {0}")]
    Delivery(#[from] DeliveryError),
    /// Offsets to commit, but the consumer has no group metadata (it left the group).
    #[error("transaction: no consumer group metadata")]
    NoGroupMetadata,
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

    /// Whether the open transaction must be aborted before the session ends: not when the
    /// producer is unusable (a fatal error), whose successor's `init_transactions` aborts it.
    fn needs_abort(&self) -> bool {
        match self {
            SessionError::Transaction(e) => e.needs_abort(),
            SessionError::Fenced(_) => false,
            _ => true,
        }
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
                resource: input_topics(cfg).map(|t| format!("Topic:{t}")).join(" / "),
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

/// The topics a session consumes: verdicts and commands (keyed by mailbox), endpoints' scan
/// results (keyed by device, re-keyed by the processor) and the re-keyed results (by mailbox).
fn input_topics(cfg: &Config) -> [&str; 4] {
    let t = &cfg.topics;
    [
        &t.verdicts,
        &t.commands,
        &t.scan_results,
        &t.scan_results_routed,
    ]
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between retries of a transactional call librdkafka says may be retried.
const TXN_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Stored states one tick's sweep looks at (a few milliseconds of decoding).
const SWEEP_BUDGET: usize = 5_000;

/// Records taken from the fetch queue per batch, before timers and commits are checked.
const BATCH: usize = 1024;

/// Entries of the consumer queue served per loop (it holds rebalances, statistics and errors;
/// records only in the unexpected case described in [`Core::handle_polled`]).
const BURST: usize = 64;

/// Longest wait on the fetch queue: the consumer queue (rebalances) is looked at least this
/// often while no record arrives.
const MAX_FETCH_WAIT: Duration = Duration::from_millis(10);

/// An early commit (a transaction holding a block) waits at least this many times as long as
/// the last commit took while the pipeline is behind its input (its last batch was full).
/// While trips are frequent — a wave of compromised mailboxes, or the bench's 50 trips a
/// second — commits then take at most a fifth of the pipeline's time instead of most of it (a
/// fixed 5 ms gap measured 0.20 of the raw consumer and 311 ms trip → block at light load).
const EARLY_COMMIT_COST_FACTOR: u32 = 4;

/// The same factor while the pipeline has caught up with its input (its last batch was not
/// full): the time spent committing is then time it would have spent waiting, so an early
/// commit waits only as long as the last commit took (at most half the time commits).
const EARLY_COMMIT_COST_FACTOR_CAUGHT_UP: u32 = 1;

/// When the session commits and ticks, on the monotonic clock: a pure schedule, so a manual
/// clock drives it in tests.
#[derive(Debug, Clone)]
struct Cadence {
    commit_interval: Duration,
    /// A transaction holding a block commits this long after the previous commit ended.
    trip_gap: Duration,
    tick_interval: Duration,
    max_batch_records: usize,
    /// When the open transaction began, if one is open.
    txn_started: Option<Instant>,
    /// When the last commit ended.
    last_commit: Instant,
    /// How long the last commit took.
    last_commit_cost: Duration,
    /// Whether the last batch taken from the fetch queue was full: more input is waiting.
    behind: bool,
    next_tick: Instant,
}

impl Cadence {
    fn new(cfg: &Config, now: Instant) -> Self {
        Cadence {
            commit_interval: Duration::from_millis(cfg.kafka.commit_interval_ms),
            trip_gap: Duration::from_millis(cfg.kafka.trip_commit_gap_ms),
            tick_interval: Duration::from_millis(cfg.state.tick_interval_ms),
            max_batch_records: cfg.kafka.max_batch_records,
            txn_started: None,
            last_commit: now,
            last_commit_cost: Duration::ZERO,
            behind: false,
            next_tick: now,
        }
    }

    fn txn_open(&self) -> bool {
        self.txn_started.is_some()
    }

    /// When the open transaction is due: at the end of the interval, or, if it holds a block
    /// (`urgent`), once the gap after the last commit has passed — `trip_commit_gap_ms`, or
    /// [`EARLY_COMMIT_COST_FACTOR`] (caught up: [`EARLY_COMMIT_COST_FACTOR_CAUGHT_UP`]) times
    /// the last commit's duration if that is longer.
    fn commit_at(&self, urgent: bool) -> Option<Instant> {
        let at = self.txn_started? + self.commit_interval;
        let factor = if self.behind {
            EARLY_COMMIT_COST_FACTOR
        } else {
            EARLY_COMMIT_COST_FACTOR_CAUGHT_UP
        };
        let gap = self.trip_gap.max(self.last_commit_cost * factor);
        Some(if urgent {
            at.min(self.last_commit + gap)
        } else {
            at
        })
    }

    /// How long the loop may wait for input at `now`: until the open transaction is due, and
    /// never past the next tick.
    fn poll_timeout(&self, now: Instant, urgent: bool) -> Duration {
        let to_commit = match self.commit_at(urgent) {
            Some(at) => at.saturating_duration_since(now),
            None => self.tick_interval,
        };
        to_commit
            .min(self.next_tick.saturating_duration_since(now))
            .min(self.tick_interval)
    }

    /// Whether the open transaction, holding `records` input records (and a block if
    /// `urgent`), should commit at `now`.
    fn commit_due(&self, now: Instant, records: usize, urgent: bool) -> bool {
        self.commit_at(urgent)
            .is_some_and(|at| records >= self.max_batch_records || now >= at)
    }

    /// The open transaction, whose commit began at `started`, committed at `now`.
    fn committed(&mut self, started: Instant, now: Instant) {
        self.txn_started = None;
        self.last_commit = now;
        self.last_commit_cost = now.saturating_duration_since(started);
    }

    /// Whether a tick is due at `now`; if so, the next one is scheduled.
    fn tick_due(&mut self, now: Instant) -> bool {
        if now < self.next_tick {
            return false;
        }
        self.next_tick = now + self.tick_interval;
        true
    }
}

/// The stages of one commit, timed on the monotonic clock and reported together once the commit
/// succeeded.
struct StageTimer<'c> {
    clock: &'c dyn Clock,
    lap_started: Instant,
    took: Vec<(Stage, Duration)>,
}

impl<'c> StageTimer<'c> {
    fn start(clock: &'c dyn Clock) -> Self {
        StageTimer {
            clock,
            lap_started: clock.monotonic(),
            took: Vec::with_capacity(5),
        }
    }

    /// The stage that ran since the last lap (or the start) ended now.
    fn lap(&mut self, stage: Stage) {
        let now = self.clock.monotonic();
        self.took.push((stage, now - self.lap_started));
        self.lap_started = now;
    }

    /// What ran since the last lap is not a stage of its own.
    fn skip(&mut self) {
        self.lap_started = self.clock.monotonic();
    }

    fn emit(self, metrics: &Metrics) {
        for (stage, took) in self.took {
            StageTimed { stage, took }.emit(metrics);
        }
    }
}

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
    cadence: Cadence,
    /// The input topics, in [`input_topics`]' order (shared with the batch loop, which looks
    /// records' topics up in it without holding the core).
    inputs: Arc<[String; 4]>,
    /// Next offset per (input topic, as its index in [`Core::inputs`], partition): no
    /// allocation per record.
    offsets: HashMap<(u8, i32), i64>,
    records: usize,
    timestamps: Vec<i64>,
    failed: Option<SessionError>,
    /// Processor time at which the next idle-state sweep starts (or goes on).
    next_sweep: i64,
}

impl Core {
    fn begin(&mut self) -> Result<(), SessionError> {
        if !self.cadence.txn_open() {
            txn::retry(TxnOp::Begin, TXN_RETRY_PAUSE, || {
                self.producer.begin_transaction()
            })
            .map_err(txn_error)?;
            self.cadence.txn_started = Some(self.clock.monotonic());
        }
        Ok(())
    }

    /// Process one input record at `now` (read once per batch by the caller); `input` is the
    /// topic's index in [`Core::inputs`].
    fn handle(&mut self, input: u8, rec: InRecord<'_>, now: i64) -> Result<(), SessionError> {
        self.begin()?;
        let (partition, offset, timestamp) = (rec.partition, rec.offset, rec.timestamp);
        let mut sink = ProducerSink {
            producer: &self.producer,
        };
        self.processor.handle(rec, now, &mut sink)?;
        self.offsets.insert((input, partition), offset + 1);
        self.records += 1;
        if let Some(ts) = timestamp {
            if self.timestamps.len() < 100_000 {
                self.timestamps.push(ts);
            }
        }
        Ok(())
    }

    /// A record that reached the consumer queue instead of the fetch queue (not expected: every
    /// assigned partition is routed before it is assigned; handled the same way if it happens).
    fn handle_polled(
        &mut self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        now: i64,
    ) -> Result<(), SessionError> {
        let topic = m.topic();
        let input = self.inputs.iter().position(|t| t == topic).unwrap_or(0) as u8;
        let rec = InRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp: m.timestamp().to_millis(),
        };
        self.handle(input, rec, now)
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

    fn poll_timeout(&self) -> Duration {
        self.cadence
            .poll_timeout(self.clock.monotonic(), self.processor.urgent())
    }

    fn due(&self) -> bool {
        self.cadence.commit_due(
            self.clock.monotonic(),
            self.records,
            self.processor.urgent(),
        )
    }

    /// Commit the open transaction (outputs + changelog + offsets), then write local state.
    fn commit(&mut self, cgm: Option<ConsumerGroupMetadata>) -> Result<(), SessionError> {
        if !self.cadence.txn_open() {
            return Ok(());
        }
        let clock = self.clock.clone();
        let started = clock.monotonic();
        let mut stages = StageTimer::start(&*clock);
        let mut sink = ProducerSink {
            producer: &self.producer,
        };
        let mut batch = self
            .processor
            .prepare_commit(self.clock.now_ms(), &mut sink)?;
        stages.lap(Stage::StageChangelog);
        let tpl = self.offsets_to_commit()?;
        stages.skip();
        txn::retry(TxnOp::Deliver, TXN_RETRY_PAUSE, || {
            deliver_all(&self.producer, TXN_TIMEOUT)
        })
        .map_err(txn_error)?;
        stages.lap(Stage::Deliver);
        if tpl.count() > 0 {
            let cgm = cgm.ok_or(SessionError::NoGroupMetadata)?;
            self.guarded(TxnOp::SendOffsets, |p| {
                p.send_offsets_to_transaction(&tpl, &cgm, TXN_TIMEOUT)
            })?;
        }
        stages.lap(Stage::SendOffsets);
        self.guarded(TxnOp::Commit, |p| p.commit_transaction(TXN_TIMEOUT))?;
        self.cadence.committed(started, clock.monotonic());
        stages.lap(Stage::CommitTransaction);
        let committed_at = self.clock.now_ms();
        // `deliver_all` above served every delivery report, so the changelog positions are
        // complete here.
        let positions = take_deliveries(&self.tracker)?;
        self.processor.stage_positions(&mut batch, &positions);
        stages.skip();
        self.processor.store().write(batch)?;
        stages.lap(Stage::Store);
        stages.emit(&self.metrics);
        // `committed` logs and counts the commit (one event, see telemetry::events).
        self.metrics
            .committed(clock.monotonic() - started, self.records);
        for ts in self.timestamps.drain(..) {
            self.metrics
                .processing_latency((committed_at - ts) as f64 / 1000.0);
        }
        self.offsets.clear();
        self.records = 0;
        Ok(())
    }

    /// The input offsets of the open transaction.
    fn offsets_to_commit(&self) -> Result<TopicPartitionList, SessionError> {
        let mut tpl = TopicPartitionList::new();
        for ((input, p), next) in &self.offsets {
            let topic = &self.inputs[usize::from(*input)];
            tpl.add_partition_offset(topic, *p, Offset::Offset(*next))?;
        }
        Ok(tpl)
    }

    /// A transactional call under the watchdog, retried while librdkafka says it may be.
    fn guarded(
        &self,
        op: TxnOp,
        call: impl Fn(&BaseProducer<TrackingContext>) -> Result<(), RdError>,
    ) -> Result<(), SessionError> {
        txn::retry(op, TXN_RETRY_PAUSE, || {
            self.watchdog
                .guard(op.as_str(), TXN_TIMEOUT, || call(&self.producer))
        })
        .map_err(txn_error)
    }

    /// End the session's work after `failure`, dropping everything uncommitted. The
    /// transaction is aborted unless the producer is unusable: then the next session's
    /// `init_transactions` aborts it.
    fn abort(&mut self, failure: &SessionError) {
        if self.cadence.txn_open() {
            if failure.needs_abort() {
                if !drain_for_abort(&self.producer, TXN_TIMEOUT) {
                    warn!("records of the aborted transaction still outstanding");
                }
                let aborted = self.watchdog.guard("abort_transaction", TXN_TIMEOUT, || {
                    self.producer.abort_transaction(TXN_TIMEOUT)
                });
                if let Err(e) = aborted {
                    warn!(error = %e, "abort failed; the next session's init_transactions fences it");
                }
            }
            self.metrics.aborted();
            self.cadence.txn_started = None;
        }
        let _ = take_deliveries(&self.tracker);
        self.processor.discard_uncommitted();
        self.offsets.clear();
        self.records = 0;
        self.timestamps.clear();
    }
}

/// The session's error for a failed transactional call: a fencing stops the pipeline.
fn txn_error(e: TxnError) -> SessionError {
    if e.action == Action::Stop {
        return SessionError::Fenced(e.source.to_string());
    }
    SessionError::Transaction(e)
}

struct SessionContext {
    core: Arc<Mutex<Core>>,
    /// Where assigned partitions deliver their records; set once the consumer exists, taken
    /// (and so destroyed) before the consumer is dropped.
    fetch: Mutex<Option<Arc<FetchQueue>>>,
}

impl SessionContext {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().expect("session core lock not poisoned")
    }
}

impl SessionContext {
    /// Route the partitions about to be assigned to the fetch queue (before `assign`, see
    /// [`crate::kafka::batch`]). A partition that cannot be routed ends the session: its records
    /// would arrive on another queue, out of order with the rest.
    fn route(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let fetch = self.fetch.lock().expect("fetch queue lock").clone();
        let Some(fetch) = fetch else {
            return; // the session is closing
        };
        for e in tpl.elements() {
            if let Err(e) = fetch.route(consumer, e.topic(), e.partition()) {
                error!(error = %e, "partition not routed to the fetch queue");
                self.lock().failed.get_or_insert(SessionError::Kafka(e));
            }
        }
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
        let tpl = match rebalance {
            Rebalance::Assign(tpl) => return self.route(consumer, tpl),
            Rebalance::Revoke(tpl) => tpl,
            Rebalance::Error(_) => return,
        };
        let mut core = self.lock();
        // Commit what was processed while we still own the partitions (and our generation is
        // still valid); the next owner resumes exactly after it.
        if let Err(e) = core.commit(consumer.group_metadata()) {
            error!(error = %e, "commit on revocation failed");
            core.abort(&e);
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
                // State lives with the verdicts' partitions (commands and routed scan results are
                // co-partitioned with them; `endpoint.scan-results` needs no state).
                let verdicts = core.cfg.topics.verdicts.clone();
                let partitions: BTreeSet<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == verdicts)
                    .map(|e| e.partition())
                    .collect();
                core.health.set_ready(false);
                // An incremental assignment (KIP-848) can arrive while a transaction holding
                // other partitions' records is open: it commits before the restore, which may
                // take seconds, so that its blocks do not wait for it and it cannot outlive
                // `kafka.transaction_timeout_ms`. (Under the classic protocol every partition
                // was revoked first, and the revocation committed.)
                if core.failed.is_none() {
                    if let Err(e) = core.commit(consumer.group_metadata()) {
                        error!(error = %e, "commit before restoring assigned partitions failed");
                        core.abort(&e);
                        core.failed.get_or_insert(e);
                    }
                }
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
                    .and_then(|restored| {
                        PartitionsRestored {
                            changelog: &changelog,
                            partitions: &partitions,
                            restored,
                        }
                        .emit(&core.metrics);
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

/// A transactional producer whose `init_transactions` is done, ready for a session.
pub struct ReadyProducer(BaseProducer<TrackingContext>, Arc<DeliveryTracker>);

/// Open the session's producer ahead of the session (see [`run_session`]).
pub fn ready_producer(cfg: &Config, watchdog: &Watchdog) -> Result<ReadyProducer, SessionError> {
    open_producer(cfg, watchdog).map(|(p, t)| ReadyProducer(p, t))
}

/// Run one session until `stop` is set (Ok) or something fails (Err). `producer` is one opened
/// ahead ([`ready_producer`]), or `None` to open one now.
pub fn run_session(
    deps: &SessionDeps,
    processor: Processor,
    stop: &AtomicBool,
    producer: Option<ReadyProducer>,
) -> Result<(), SessionError> {
    let cfg = &deps.cfg;
    let (producer, tracker) = match producer {
        Some(ReadyProducer(p, t)) => (p, t),
        None => open_producer(cfg, &deps.watchdog)?,
    };
    let core = Arc::new(Mutex::new(Core {
        cfg: cfg.clone(),
        processor,
        producer,
        tracker,
        metrics: deps.metrics.clone(),
        health: deps.health.clone(),
        clock: deps.clock.clone(),
        watchdog: deps.watchdog.clone(),
        cadence: Cadence::new(cfg, deps.clock.monotonic()),
        inputs: Arc::new(input_topics(cfg).map(String::from)),
        offsets: HashMap::new(),
        records: 0,
        timestamps: Vec::new(),
        failed: None,
        next_sweep: deps.clock.now_ms(),
    }));
    let consumer: BaseConsumer<SessionContext> = client::group_consumer(&cfg.kafka)
        .create_with_context(SessionContext {
            core: core.clone(),
            fetch: Mutex::new(None),
        })?;
    let fetch = Arc::new(FetchQueue::new(&consumer)?);
    *consumer.context().fetch.lock().expect("fetch queue lock") = Some(fetch.clone());
    let mut batch = Batch::with_capacity(BATCH);
    consumer.subscribe(&input_topics(cfg))?;
    info!(group = %cfg.kafka.group_id, transactional_id = %cfg.transactional_id(), "session started");

    let result = loop {
        if stop.load(Ordering::Relaxed) {
            let mut c = core.lock().expect("lock");
            break c.commit(consumer.group_metadata());
        }
        if let Some(e) = core.lock().expect("lock").failed.take() {
            break Err(e);
        }
        let timeout = core.lock().expect("lock").poll_timeout();
        let step =
            handle_batch(&consumer, &fetch, &mut batch, &core, deps, timeout).and_then(|()| {
                let mut c = core.lock().expect("lock");
                // Serve delivery reports once per burst, so the producer queue never fills up
                // between commits.
                c.producer.poll(Duration::ZERO);
                let now = c.clock.monotonic();
                if c.cadence.tick_due(now) {
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
        if let Err(e) = &result {
            c.abort(e);
        }
        c.health.set_ready(false);
        c.health.rest();
    }
    // The fetched messages and the fetch queue go before the consumer (they hold references
    // into its client). Leaving the group runs the revoke callback, which must find the lock
    // free.
    drop(batch);
    consumer
        .context()
        .fetch
        .lock()
        .expect("fetch queue lock")
        .take();
    drop(fetch);
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
    txn::retry(TxnOp::Init, TXN_RETRY_PAUSE, || {
        watchdog.guard(TxnOp::Init.as_str(), TXN_TIMEOUT, || {
            producer.init_transactions(TXN_TIMEOUT)
        })
    })
    .map_err(|e| match e.source.rdkafka_error_code() {
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

/// Serves the consumer queue (rebalances, statistics, errors; never waits), then waits up to
/// `timeout` (at most [`MAX_FETCH_WAIT`]) for records on the fetch queue and handles the batch
/// under one lock, at one clock reading. Clock reads, timer and commit checks happen once per
/// batch, in the caller. The lock is released around every poll because poll may run the
/// rebalance callbacks, which take it.
fn handle_batch(
    consumer: &BaseConsumer<SessionContext>,
    fetch: &FetchQueue,
    batch: &mut Batch,
    core: &Mutex<Core>,
    deps: &SessionDeps,
    timeout: Duration,
) -> Result<(), SessionError> {
    serve_consumer_queue(consumer, core, deps)?;
    fetch.fetch(timeout.min(MAX_FETCH_WAIT), batch);
    deps.health.beat();
    if batch.is_empty() {
        core.lock().expect("lock").cadence.behind = false;
        return Ok(());
    }
    let now = deps.clock.now_ms();
    let mut c = core.lock().expect("lock");
    c.cadence.behind = batch.len() >= BATCH;
    let inputs = c.inputs.clone();
    for entry in batch.iter() {
        let f = match entry {
            Ok(f) => f,
            Err(e) => match consumer_error(e, &deps.cfg) {
                Some(fatal) => return Err(fatal),
                None => continue,
            },
        };
        let topic = f.topic();
        let Some(input) = inputs.iter().position(|t| t.as_bytes() == topic) else {
            // Only the input topics are subscribed, so only their partitions are routed here.
            warn!(topic = %String::from_utf8_lossy(topic), "record of a topic not subscribed");
            continue;
        };
        let rec = InRecord {
            topic: &inputs[input],
            partition: f.partition(),
            offset: f.offset(),
            key: f.key(),
            payload: f.payload(),
            timestamp: f.timestamp(),
        };
        c.handle(input as u8, rec, now)?;
    }
    Ok(())
}

/// Poll the consumer queue without waiting until it is empty (or [`BURST`] entries were
/// served): rebalance callbacks run here, and a record that reached it is handled.
fn serve_consumer_queue(
    consumer: &BaseConsumer<SessionContext>,
    core: &Mutex<Core>,
    deps: &SessionDeps,
) -> Result<(), SessionError> {
    for _ in 0..BURST {
        match consumer.poll(Duration::ZERO) {
            None => break,
            Some(Ok(m)) => {
                let now = deps.clock.now_ms();
                core.lock().expect("lock").handle_polled(&m, now)?;
            }
            Some(Err(e)) => {
                if let Some(fatal) = consumer_error(e, &deps.cfg) {
                    return Err(fatal);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timers::ManualClock;

    fn cadence(clock: &ManualClock) -> Cadence {
        Cadence {
            commit_interval: Duration::from_millis(100),
            trip_gap: Duration::from_millis(5),
            tick_interval: Duration::from_millis(250),
            max_batch_records: 10,
            txn_started: None,
            last_commit: clock.monotonic(),
            last_commit_cost: Duration::ZERO,
            behind: true,
            next_tick: clock.monotonic(),
        }
    }

    #[test]
    fn the_manual_clock_drives_the_commit_and_tick_cadence() {
        let clock = ManualClock::frozen(0);
        let mut c = cadence(&clock);
        assert!(
            c.tick_due(clock.monotonic()),
            "the first tick is due at once"
        );
        assert!(!c.tick_due(clock.monotonic()));
        assert!(
            !c.commit_due(clock.monotonic(), 0, true),
            "no transaction open"
        );
        assert_eq!(
            c.poll_timeout(clock.monotonic(), false),
            Duration::from_millis(250),
            "idle: wait until the next tick"
        );
        c.txn_started = Some(clock.monotonic());
        clock.advance(40);
        assert!(!c.commit_due(clock.monotonic(), 9, false));
        assert!(
            c.commit_due(clock.monotonic(), 10, false),
            "a full batch commits"
        );
        assert_eq!(
            c.poll_timeout(clock.monotonic(), false),
            Duration::from_millis(60)
        );
        clock.advance(60);
        assert!(
            c.commit_due(clock.monotonic(), 1, false),
            "the interval is up"
        );
        assert_eq!(c.poll_timeout(clock.monotonic(), false), Duration::ZERO);
        clock.advance(150);
        assert!(c.tick_due(clock.monotonic()));
        assert!(!c.tick_due(clock.monotonic()), "the next tick is scheduled");
    }

    #[test]
    fn a_transaction_holding_a_block_commits_once_the_gap_after_the_last_commit_passed() {
        let clock = ManualClock::frozen(0);
        let mut c = cadence(&clock);
        assert!(c.tick_due(clock.monotonic()));
        c.txn_started = Some(clock.monotonic());
        clock.advance(2);
        assert!(!c.commit_due(clock.monotonic(), 1, true), "inside the gap");
        assert_eq!(
            c.poll_timeout(clock.monotonic(), true),
            Duration::from_millis(3),
            "wait only for the rest of the gap"
        );
        clock.advance(3);
        assert!(c.commit_due(clock.monotonic(), 1, true));
        assert!(
            !c.commit_due(clock.monotonic(), 1, false),
            "without a block the interval holds"
        );
        c.committed(clock.monotonic(), clock.monotonic());
        clock.advance(1);
        c.txn_started = Some(clock.monotonic());
        assert!(
            !c.commit_due(clock.monotonic(), 1, true),
            "the gap counts from the end of the last commit"
        );
        clock.advance(4);
        assert!(c.commit_due(clock.monotonic(), 1, true));
    }

    #[test]
    fn early_commits_wait_for_a_multiple_of_the_last_commits_duration() {
        let clock = ManualClock::frozen(0);
        let mut c = cadence(&clock);
        assert!(c.tick_due(clock.monotonic()));
        let started = clock.monotonic();
        clock.advance(10);
        // A commit of 10 ms: the next early one waits 40 ms (not the 5 ms gap), never past the
        // interval.
        c.committed(started, clock.monotonic());
        c.txn_started = Some(clock.monotonic());
        clock.advance(39);
        assert!(!c.commit_due(clock.monotonic(), 1, true));
        assert_eq!(
            c.poll_timeout(clock.monotonic(), true),
            Duration::from_millis(1)
        );
        clock.advance(1);
        assert!(c.commit_due(clock.monotonic(), 1, true));
        // A slow commit (40 ms): the interval (100 ms) bounds the wait.
        let started = clock.monotonic();
        clock.advance(40);
        c.committed(started, clock.monotonic());
        c.txn_started = Some(clock.monotonic());
        clock.advance(99);
        assert!(!c.commit_due(clock.monotonic(), 1, true));
        clock.advance(1);
        assert!(c.commit_due(clock.monotonic(), 1, true));
    }

    #[test]
    fn caught_up_an_early_commit_waits_only_as_long_as_the_last_commit_took() {
        let clock = ManualClock::frozen(0);
        let mut c = cadence(&clock);
        c.behind = false;
        let started = clock.monotonic();
        clock.advance(10);
        c.committed(started, clock.monotonic());
        c.txn_started = Some(clock.monotonic());
        clock.advance(9);
        assert!(!c.commit_due(clock.monotonic(), 1, true));
        clock.advance(1);
        assert!(
            c.commit_due(clock.monotonic(), 1, true),
            "one commit's duration"
        );
        c.behind = true;
        assert!(
            !c.commit_due(clock.monotonic(), 1, true),
            "behind its input, the pipeline waits four"
        );
        clock.advance(30);
        assert!(c.commit_due(clock.monotonic(), 1, true));
    }

    #[test]
    fn a_wall_clock_jump_does_not_move_the_cadence() {
        let clock = ManualClock::frozen(0);
        let mut c = cadence(&clock);
        assert!(c.tick_due(clock.monotonic()));
        c.txn_started = Some(clock.monotonic());
        clock.set(3_600_000);
        assert!(!c.tick_due(clock.monotonic()));
        assert!(!c.commit_due(clock.monotonic(), 0, false));
    }
}
