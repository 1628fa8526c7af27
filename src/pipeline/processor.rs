//! Decode → step → stage: what happens to one input record, independent of how records arrive
//! and how the transaction is driven.
//!
//! The processor owns the *uncommitted* view of state: states changed in the open transaction
//! live in `dirty` (an overlay over RocksDB) until [`Processor::prepare_commit`] turns them into
//! changelog records and a RocksDB batch, which the session writes only after Kafka committed.

use std::collections::{BTreeSet, HashMap, HashSet};

use tracing::debug;

use crate::codec::{Codec, CodecError};
use crate::config::TopicsConfig;
use crate::pipeline::directory::TableDirectory;
use crate::pipeline::dlq::{DeadLetter, DeadLetterQueue, Kind, Refusal, Source};
use crate::pipeline::sink::{Sink, SinkError};
use crate::policy::{
    self, Effect, Exemption, Input, LimitError, Limits, MailboxKey, MailboxState, Millis, Outcome,
    Policy, ScanResult,
};
use crate::store::{Batch, Store, StoreError};
use crate::telemetry::events::{
    EffectSent, PolicyOutcome, ScanResultForwarded, VerdictClamped, VerdictConsumed,
};
use crate::telemetry::{InternalEvent, Metrics};
use crate::timers::Timers;

/// One consumed record, borrowed from the consumer.
#[derive(Debug, Clone, Copy)]
pub struct InRecord<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Key bytes (the mailbox).
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub payload: Option<&'a [u8]>,
    /// Record timestamp, epoch ms.
    pub timestamp: Option<Millis>,
}

/// Errors that end the session (the transaction is aborted and the session rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Local state failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The producer refused a record.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The writer schema of a record cannot be fetched right now (registry unreachable): the
    /// session is rebuilt and the record read again, instead of dead-lettering good input.
    #[error("writer schema unavailable: {0}")]
    SchemaUnavailable(crate::codec::CodecError),
    /// A state value in RocksDB could not be decoded: the local copy is corrupt.
    #[error("corrupt local state for partition {partition}: {reason}")]
    CorruptState {
        /// Partition.
        partition: i32,
        /// Why.
        reason: String,
    },
}

/// Why [`Processor::handle`] does not give a record to the policy: bad input (for the DLQ), or a
/// failure that ends the session.
enum Reject {
    /// Bad input, for the DLQ.
    Refused(Refusal),
    /// The writer schema cannot be fetched right now.
    Failed(ProcessError),
}

impl Reject {
    fn refused(kind: Kind, reason: impl Into<String>) -> Self {
        Reject::Refused(Refusal::new(kind, reason))
    }

    /// A body that does not decode; only a writer schema unavailable right now (registry
    /// unreachable) is a failure: the session is rebuilt and the record read again, instead of
    /// dead-lettering good input.
    fn undecodable(e: CodecError) -> Self {
        if e.is_transient() {
            Reject::Failed(ProcessError::SchemaUnavailable(e))
        } else {
            Reject::refused(Kind::Undecodable, e.to_string())
        }
    }

    fn over_limit(e: LimitError) -> Self {
        Reject::refused(Kind::OverLimit, e.to_string())
    }

    /// The key decides the partition and so which state the record may touch; a record whose
    /// key disagrees with its body would corrupt another partition's state.
    fn mismatch(key: MailboxKey<'_>, mailbox: &str) -> Self {
        let reason = format!("key `{}` does not match mailbox `{mailbox}`", key.as_str());
        Reject::refused(Kind::KeyMismatch, reason)
    }
}

/// An outcome of the open transaction, emitted once it commits.
struct Deferred {
    mailbox: String,
    outcome: Outcome,
    blocked_until: Option<Millis>,
    now: Millis,
}

/// The per-session processing state.
pub struct Processor {
    codec: Codec,
    policy: Policy,
    limits: Limits,
    directory: TableDirectory,
    store: Store,
    metrics: Metrics,
    topics: TopicsConfig,
    dlq: DeadLetterQueue,
    dirty: HashMap<(i32, String), MailboxState>,
    /// Keys of `dirty` that local state did not hold before this transaction.
    fresh: HashSet<(i32, String)>,
    /// Mailbox states in local state per owned partition (as of the last commit).
    state_counts: HashMap<i32, i64>,
    /// Change of `state_counts` that the open transaction makes once it commits.
    pending_counts: HashMap<i32, i64>,
    /// What the open transaction did (trips, unblocks, …), logged and counted once it commits:
    /// an aborted and redone transaction counts once, not per attempt.
    pending_outcomes: Vec<Deferred>,
    /// The open transaction holds a block or unblock: worth committing now
    /// (`kafka.trip_commit_gap_ms`), not at the end of the interval.
    urgent: bool,
    timers: Timers,
    owned: BTreeSet<i32>,
    /// Where the idle-state sweep goes on: partition and the last mailbox it looked at.
    sweep_cursor: Option<(i32, Option<String>)>,
    buf: Vec<u8>,
}

impl Processor {
    /// A processor owning no partition yet.
    pub fn new(
        codec: Codec,
        policy: Policy,
        limits: Limits,
        directory: TableDirectory,
        store: Store,
        metrics: Metrics,
        topics: TopicsConfig,
    ) -> Self {
        Processor {
            dlq: DeadLetterQueue::new(&topics.dlq, limits.max_record_bytes, metrics.clone()),
            codec,
            policy,
            limits,
            directory,
            store,
            metrics,
            topics,
            dirty: HashMap::new(),
            fresh: HashSet::new(),
            state_counts: HashMap::new(),
            pending_counts: HashMap::new(),
            pending_outcomes: Vec::new(),
            urgent: false,
            timers: Timers::new(),
            owned: BTreeSet::new(),
            sweep_cursor: None,
            buf: Vec::with_capacity(512),
        }
    }

    /// Partitions currently owned.
    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// Take ownership of a restored partition: index its timed blocks and count its states.
    pub fn assign(&mut self, partition: i32) -> Result<(), ProcessError> {
        let timers = &mut self.timers;
        let mut corrupt = None;
        let mut states = 0i64;
        self.store.for_each_state(partition, |mailbox, bytes| {
            states += 1;
            match MailboxState::decode(bytes) {
                Ok(s) => timers.set(partition, mailbox, s.next_deadline()),
                Err(e) => corrupt = Some(format!("{mailbox}: {e}")),
            }
            Ok(())
        })?;
        if let Some(reason) = corrupt {
            return Err(ProcessError::CorruptState { partition, reason });
        }
        self.owned.insert(partition);
        self.state_counts.insert(partition, states);
        self.metrics.set_state_mailboxes(partition, states);
        self.metrics.set_assigned_partitions(self.owned.len());
        self.timers_changed();
        Ok(())
    }

    /// Forget idle states: walks the stored states of the owned partitions, at most `budget` of
    /// them, going on where the last call stopped; every state that is forgettable at `now`
    /// (processor time; see [`MailboxState::is_forgettable`]) becomes a tombstone in the changelog
    /// and the store at the next commit. Returns how many were forgotten and whether the walk
    /// went round every owned partition (the caller then rests until the next sweep interval).
    ///
    /// Without it, a state is looked at only when its mailbox sends again, so every mailbox that
    /// ever sent one offending message would stay in RocksDB and the changelog for good, and
    /// each rebalance would decode all of them.
    pub fn sweep(&mut self, now: Millis, budget: usize) -> Result<(usize, bool), ProcessError> {
        let Some(&first) = self.owned.iter().next() else {
            self.sweep_cursor = None;
            return Ok((0, true));
        };
        let (mut partition, mut after) = match self.sweep_cursor.take() {
            Some((p, after)) if self.owned.contains(&p) => (p, after),
            Some((p, _)) => match self.owned.range(p..).next() {
                Some(&next) => (next, None),
                None => (first, None),
            },
            None => (first, None),
        };
        let (mut seen, mut forgotten) = (0usize, Vec::new());
        loop {
            let mut last = None;
            let policy = &self.policy;
            self.store
                .scan_states(partition, after.as_deref(), |mailbox, bytes| {
                    seen += 1;
                    last = Some(mailbox.to_string());
                    // A state that does not decode is left for the processor to report when
                    // its mailbox is next used.
                    if MailboxState::decode(bytes).is_ok_and(|s| s.is_forgettable(now, policy)) {
                        forgotten.push((partition, mailbox.to_string()));
                    }
                    Ok(seen < budget)
                })?;
            if seen >= budget {
                self.sweep_cursor = Some((partition, last));
                break;
            }
            match self.owned.range(partition + 1..).next() {
                Some(&next) => (partition, after) = (next, None),
                None => break,
            }
        }
        let mut n = 0;
        for key in forgotten {
            // A state changed in the open transaction is newer than the stored one and is
            // judged at commit as usual. The initial state stands for a forgotten one:
            // `prepare_commit` turns it into a tombstone.
            if let std::collections::hash_map::Entry::Vacant(e) = self.dirty.entry(key) {
                e.insert(MailboxState::default());
                n += 1;
            }
        }
        Ok((n, self.sweep_cursor.is_none()))
    }

    /// Give up a partition (after its transaction committed).
    pub fn revoke(&mut self, partition: i32) {
        self.owned.remove(&partition);
        self.timers.drop_partition(partition);
        self.dirty.retain(|(p, _), _| *p != partition);
        self.fresh.retain(|(p, _)| *p != partition);
        self.state_counts.remove(&partition);
        self.pending_counts.remove(&partition);
        self.metrics.drop_state_partition(partition);
        self.metrics.set_assigned_partitions(self.owned.len());
        self.timers_changed();
    }

    /// Export the timer index: how many timed blocks, and the earliest end (an overdue one shows
    /// as a `blocked_until` in the past: the `MailguardUnblockOverdue` alert).
    fn timers_changed(&self) {
        self.metrics
            .set_timers(self.timers.len(), self.timers.next_deadline());
    }

    /// The earliest pending block expiry on owned partitions.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.next_deadline()
    }

    /// Whether uncommitted state changes exist.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Drop every uncommitted change (the transaction was aborted).
    pub fn discard_uncommitted(&mut self) {
        self.dirty.clear();
        self.fresh.clear();
        self.pending_counts.clear();
        self.pending_outcomes.clear();
        self.urgent = false;
    }

    /// Whether the open transaction holds a block or unblock (cleared by the commit).
    pub fn urgent(&self) -> bool {
        self.urgent
    }

    /// The current state of a mailbox, and whether local state or this transaction holds it.
    fn load(
        &mut self,
        partition: i32,
        mailbox: &str,
    ) -> Result<(MailboxState, bool), ProcessError> {
        if let Some(s) = self.dirty.get(&(partition, mailbox.to_string())) {
            return Ok((s.clone(), true));
        }
        match self.store.get_state(partition, mailbox)? {
            Some(bytes) => MailboxState::decode(&bytes)
                .map(|s| (s, true))
                .map_err(|e| ProcessError::CorruptState {
                    partition,
                    reason: format!("{mailbox}: {e}"),
                }),
            None => Ok((MailboxState::default(), false)),
        }
    }

    /// Handle one input record: decode, run the policy, send its effects. Bad input goes to the
    /// DLQ and is otherwise skipped; only infrastructure failures are errors.
    pub fn handle(
        &mut self,
        rec: InRecord<'_>,
        now: Millis,
        sink: &mut impl Sink,
    ) -> Result<(), ProcessError> {
        let source = if rec.topic == self.topics.verdicts {
            Source::Verdicts
        } else if rec.topic == self.topics.commands {
            Source::Commands
        } else {
            Source::ScanResults
        };
        if source == Source::ScanResults && rec.topic == self.topics.scan_results {
            return match self.route(rec) {
                Ok(mailbox) => self.forward(rec, &mailbox, sink),
                Err(Reject::Refused(refusal)) => self.dead_letter(rec, source, &refusal, sink),
                Err(Reject::Failed(e)) => Err(e),
            };
        }
        let input = match self.admit(rec, source) {
            Ok(Some(input)) => input,
            // A well-formed non-offending verdict: nothing to do.
            Ok(None) => return Ok(()),
            Err(Reject::Refused(refusal)) => return self.dead_letter(rec, source, &refusal, sink),
            Err(Reject::Failed(e)) => return Err(e),
        };
        let mailbox: &str = match &input {
            Input::Verdict(v) => &v.mailbox,
            Input::Command(c) => &c.mailbox,
            Input::ScanResult(r) => r.mailbox.as_deref().unwrap_or_default(),
            Input::Tick { mailbox } => mailbox,
        };
        let mailbox = mailbox.to_owned();
        self.apply(rec.partition, &mailbox, &input, now, sink)
    }

    /// The input a record carries (`None`: a non-offending verdict), or why it has none.
    fn admit(&mut self, rec: InRecord<'_>, source: Source) -> Result<Option<Input>, Reject> {
        let Some(key) = rec.key else {
            return Err(Reject::refused(Kind::MissingKey, "missing key"));
        };
        let Ok(key) = std::str::from_utf8(key) else {
            return Err(Reject::refused(Kind::InvalidKey, "key is not UTF-8"));
        };
        // One mailbox, one spelling, one partition: a key in another case was partitioned by
        // that spelling, so counting it would give the mailbox a second state elsewhere.
        let key =
            MailboxKey::new(key).map_err(|e| Reject::refused(Kind::InvalidKey, e.to_string()))?;
        let Some(payload) = rec.payload else {
            let reason = "missing value (tombstone on an input topic)";
            return Err(Reject::refused(Kind::MissingValue, reason));
        };
        match source {
            Source::Verdicts => self.admit_verdict(key, payload),
            Source::ScanResults => self.admit_scan_result(key, payload).map(Some),
            _ => self.admit_command(key, payload).map(Some),
        }
    }

    /// A result of `endpoint.scan-results` (keyed by device): checked as any input, then the
    /// mailbox it must be re-keyed by (echoed from its request).
    fn route(&mut self, rec: InRecord<'_>) -> Result<String, Reject> {
        let Some(key) = rec.key else {
            return Err(Reject::refused(Kind::MissingKey, "missing key"));
        };
        let Some(payload) = rec.payload else {
            let reason = "missing value (tombstone on an input topic)";
            return Err(Reject::refused(Kind::MissingValue, reason));
        };
        let r = self.scan_result(payload)?;
        if key != r.device_id.as_bytes() {
            let reason = format!(
                "key `{}` does not match device `{}`",
                String::from_utf8_lossy(key),
                r.device_id
            );
            return Err(Reject::refused(Kind::KeyMismatch, reason));
        }
        let Some(mailbox) = r.mailbox else {
            let reason = "no mailbox (echo ScanRequest.mailbox): the incident cannot be found";
            return Err(Reject::refused(Kind::Unroutable, reason));
        };
        MailboxKey::new(&mailbox).map_err(|e| Reject::refused(Kind::InvalidKey, e.to_string()))?;
        // Forwarded as read: it must fit a record mailguard may write.
        self.limits
            .forwarded(mailbox.len(), payload.len())
            .map_err(Reject::over_limit)?;
        Ok(mailbox)
    }

    /// Re-keys a scan result by its mailbox onto `mailguard.scan-results` (the same bytes), in
    /// the transaction that consumes it: the owner of the mailbox's partition applies it with
    /// the incident's state (DESIGN §2).
    fn forward(
        &mut self,
        rec: InRecord<'_>,
        mailbox: &str,
        sink: &mut impl Sink,
    ) -> Result<(), ProcessError> {
        let routed = &self.topics.scan_results_routed;
        sink.send(routed, mailbox.as_bytes(), rec.payload, None, &[])?;
        ScanResultForwarded.emit(&self.metrics);
        Ok(())
    }

    fn scan_result(&mut self, payload: &[u8]) -> Result<ScanResult, Reject> {
        let r = self
            .codec
            .decode_scan_result(payload)
            .map_err(Reject::undecodable)?;
        self.limits.scan_result(&r).map_err(Reject::over_limit)?;
        Ok(r)
    }

    fn admit_scan_result(&mut self, key: MailboxKey<'_>, payload: &[u8]) -> Result<Input, Reject> {
        let r = self.scan_result(payload)?;
        let mailbox = r.mailbox.as_deref().unwrap_or_default();
        if !key.matches(mailbox) {
            return Err(Reject::mismatch(key, mailbox));
        }
        Ok(Input::ScanResult(r))
    }

    fn admit_verdict(
        &mut self,
        key: MailboxKey<'_>,
        payload: &[u8],
    ) -> Result<Option<Input>, Reject> {
        // Borrowing decode: a CLEAN verdict (the hot path) allocates nothing and never touches
        // state.
        let v = self
            .codec
            .decode_verdict_ref(payload)
            .map_err(Reject::undecodable)?;
        VerdictConsumed { kind: v.verdict }.emit(&self.metrics);
        if !v.is_about(&key) {
            return Err(Reject::mismatch(key, v.mailbox));
        }
        // Bounded fields keep every state and output this verdict may end up in bounded.
        self.limits
            .verdict(v.message_id, v.tenant_id, v.mailbox)
            .map_err(Reject::over_limit)?;
        Ok(v.verdict
            .is_offending()
            .then(|| Input::Verdict(v.to_owned())))
    }

    fn admit_command(&mut self, key: MailboxKey<'_>, payload: &[u8]) -> Result<Input, Reject> {
        let c = self
            .codec
            .decode_command(payload)
            .map_err(Reject::undecodable)?;
        if !key.matches(&c.mailbox) {
            return Err(Reject::mismatch(key, &c.mailbox));
        }
        self.limits.command(&c).map_err(Reject::over_limit)?;
        Ok(Input::Command(c))
    }

    /// Fire every timer due at `now` on owned partitions.
    pub fn tick(&mut self, now: Millis, sink: &mut impl Sink) -> Result<usize, ProcessError> {
        let due = self.timers.take_due(now);
        let n = due.len();
        for (partition, mailbox) in due {
            if !self.owned.contains(&partition) {
                continue;
            }
            let input = Input::Tick {
                mailbox: mailbox.clone(),
            };
            self.apply(partition, &mailbox, &input, now, sink)?;
        }
        if n > 0 {
            self.timers_changed();
        }
        Ok(n)
    }

    fn apply(
        &mut self,
        partition: i32,
        mailbox: &str,
        input: &Input,
        now: Millis,
        sink: &mut impl Sink,
    ) -> Result<(), ProcessError> {
        let (mut state, known) = self.load(partition, mailbox)?;
        let blocked_until = state.blocked_until();
        let result = policy::step(&mut state, input, now, &self.directory, &self.policy);
        if result.clamped {
            VerdictClamped { mailbox }.emit(&self.metrics);
        }
        for outcome in result.outcomes {
            // Offending verdicts that only count emit nothing: no allocation on the hot path.
            if !matches!(
                outcome,
                Outcome::NotOffending | Outcome::Counted | Outcome::Idle
            ) {
                self.pending_outcomes.push(Deferred {
                    mailbox: mailbox.to_string(),
                    outcome,
                    blocked_until,
                    now,
                });
            }
        }
        for effect in &result.effects {
            self.send_effect(effect, sink)?;
        }
        if result.state_changed {
            self.timers.set(partition, mailbox, state.next_deadline());
            if !known {
                self.fresh.insert((partition, mailbox.to_string()));
            }
            self.dirty.insert((partition, mailbox.to_string()), state);
            self.timers_changed();
        }
        Ok(())
    }

    fn send_effect(&mut self, effect: &Effect, sink: &mut impl Sink) -> Result<(), ProcessError> {
        self.buf.clear();
        // Our own records failing our own schema is a bug; losing the effect silently would be
        // worse than stopping, so it is an error that aborts the transaction.
        self.codec
            .encode_effect(effect, &mut self.buf)
            .map_err(SinkError::from)?;
        let exemption_key;
        let (topic, key): (&str, &str) = match effect {
            Effect::Block(b) => {
                self.urgent = true;
                (&self.topics.blocks, &b.mailbox)
            }
            Effect::Scan(s) => (&self.topics.scan_requests, &s.device_id),
            Effect::Alert(a) => (&self.topics.alerts, &a.tenant_id),
            Effect::Event(e) => (&self.topics.events, &e.mailbox),
            Effect::Exemption(x) => {
                exemption_key = Exemption::table_key(&x.tenant_id, &x.pattern);
                (&self.topics.exemptions, &exemption_key)
            }
        };
        // An exemption's tombstone encodes as no value.
        let value = (!self.buf.is_empty()).then_some(&self.buf[..]);
        sink.send(topic, key.as_bytes(), value, None, &[])?;
        EffectSent { effect }.emit(&self.metrics);
        Ok(())
    }

    fn dead_letter(
        &mut self,
        rec: InRecord<'_>,
        source: Source,
        refusal: &Refusal,
        sink: &mut impl Sink,
    ) -> Result<(), ProcessError> {
        let record = DeadLetter {
            topic: rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key.unwrap_or_default(),
            payload: rec.payload,
        };
        self.dlq.send(sink, source, record, refusal)?;
        Ok(())
    }

    /// Send the changelog records of every state changed in this transaction and return the
    /// RocksDB batch to write once Kafka has committed. Forgettable states become tombstones.
    pub fn prepare_commit(
        &mut self,
        now: Millis,
        sink: &mut impl Sink,
    ) -> Result<Batch, ProcessError> {
        let mut batch = Batch::new();
        self.urgent = false;
        let changelog = self.topics.changelog.clone();
        for ((partition, mailbox), state) in self.dirty.drain() {
            let fresh = self.fresh.remove(&(partition, mailbox.clone()));
            let forget = state.is_forgettable(now, &self.policy);
            // A state new to local state adds one, a stored one deleted removes one.
            let delta = match (fresh, forget) {
                (true, false) => 1,
                (false, true) => -1,
                _ => 0,
            };
            if delta != 0 {
                *self.pending_counts.entry(partition).or_default() += delta;
            }
            if forget {
                sink.send(&changelog, mailbox.as_bytes(), None, Some(partition), &[])?;
                self.store
                    .stage_state(&mut batch, partition, &mailbox, None);
            } else {
                self.buf.clear();
                state.encode(&mut self.buf);
                sink.send(
                    &changelog,
                    mailbox.as_bytes(),
                    Some(&self.buf),
                    Some(partition),
                    &[],
                )?;
                self.store
                    .stage_state(&mut batch, partition, &mailbox, Some(&self.buf));
            }
        }
        debug!(ops = batch.len(), "changelog staged");
        Ok(batch)
    }

    /// Stage the restore positions reported by the producer (next offset per changelog
    /// partition) into the batch written after commit. Called once the transaction committed,
    /// so the state counts of its changes take effect here, and its outcomes are logged and
    /// counted.
    pub fn stage_positions(&mut self, batch: &mut Batch, positions: &HashMap<i32, i64>) {
        for (p, next) in positions {
            self.store.stage_changelog_position(batch, *p, *next);
        }
        for (partition, delta) in self.pending_counts.drain() {
            if let Some(n) = self.state_counts.get_mut(&partition) {
                *n = (*n + delta).max(0);
                self.metrics.set_state_mailboxes(partition, *n);
            }
        }
        for d in self.pending_outcomes.drain(..) {
            PolicyOutcome {
                mailbox: &d.mailbox,
                outcome: &d.outcome,
                blocked_until: d.blocked_until,
                now: d.now,
            }
            .emit(&self.metrics);
        }
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, RwLock};

    use super::*;
    use crate::codec::OwnerDevices;
    use crate::pipeline::sink::VecSink;
    use crate::policy::{Owner, Verdict, VerdictKind};

    struct Fixture {
        processor: Processor,
        codec: Codec,
        topics: TopicsConfig,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let codec = Codec::default();
        // Directory: owner with two devices.
        let mut batch = Batch::new();
        let mut buf = Vec::new();
        let owner = Owner {
            owner_id: "o1".into(),
            tenant_id: "t".into(),
            owner_name: None,
        };
        codec.encode_owner("a@x.com", &owner, &mut buf).unwrap();
        store.stage_table(
            &mut batch,
            crate::store::Table::Owners,
            "a@x.com",
            Some(&buf),
        );
        let mut buf = Vec::new();
        let d = OwnerDevices {
            owner_id: "o1".into(),
            tenant_id: "t".into(),
            device_ids: vec!["d1".into(), "d2".into()],
        };
        codec.encode_devices(&d, &mut buf).unwrap();
        store.stage_table(&mut batch, crate::store::Table::Devices, "o1", Some(&buf));
        store.write(batch).unwrap();
        let tenants = Arc::new(RwLock::new(HashMap::new()));
        let defaults = crate::config::TenantDefaults::default().to_settings();
        let directory = TableDirectory::new(store.clone(), codec.clone(), tenants, defaults);
        let topics = TopicsConfig::default();
        let mut processor = Processor::new(
            codec.clone(),
            Policy::default(),
            Limits::default(),
            directory,
            store,
            Metrics::new(),
            topics.clone(),
        );
        processor.assign(0).unwrap();
        Fixture {
            processor,
            codec,
            topics,
            _dir: dir,
        }
    }

    /// Five SPAM verdicts of a@x.com (offsets 0–4, sent at 1 000–1 004) handled at 2 000: a trip.
    fn trip_a(f: &mut Fixture, sink: &mut VecSink) {
        for i in 0..5 {
            let v = verdict(
                &f.codec,
                "a@x.com",
                &format!("m{i}"),
                1_000 + i,
                VerdictKind::Spam,
            );
            f.processor
                .handle(
                    rec(&f.topics.verdicts, i, Some(b"a@x.com"), Some(&v)),
                    2_000,
                    sink,
                )
                .unwrap();
        }
    }

    fn verdict(codec: &Codec, mailbox: &str, id: &str, sent_at: i64, kind: VerdictKind) -> Vec<u8> {
        let mut out = Vec::new();
        let v = Verdict {
            message_id: id.into(),
            tenant_id: "t".into(),
            mailbox: mailbox.into(),
            sent_at,
            verdict: kind,
        };
        codec.encode_verdict(&v, &mut out).unwrap();
        out
    }

    fn rec<'a>(
        topic: &'a str,
        offset: i64,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
    ) -> InRecord<'a> {
        InRecord {
            topic,
            partition: 0,
            offset,
            key,
            payload,
            timestamp: Some(0),
        }
    }

    #[test]
    fn clean_verdicts_touch_no_state_and_emit_nothing() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        let v = verdict(&f.codec, "a@x.com", "m1", 1_000, VerdictKind::Clean);
        f.processor
            .handle(
                rec(&f.topics.verdicts, 0, Some(b"a@x.com"), Some(&v)),
                1_000,
                &mut sink,
            )
            .unwrap();
        assert!(sink.records.is_empty());
        assert!(!f.processor.has_dirty());
    }

    #[test]
    fn a_trip_emits_block_scans_alert_events_then_changelog() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        trip_a(&mut f, &mut sink);
        let topics: Vec<&str> = sink.records.iter().map(|r| r.topic.as_str()).collect();
        let t = &f.topics;
        assert_eq!(
            topics,
            vec![
                // The fourth message: the early warning (alert, MAILBOX_WARNED, ALERT_SENT).
                &t.alerts,
                &t.events,
                &t.events,
                &t.blocks,
                &t.scan_requests,
                &t.scan_requests,
                &t.alerts,
                &t.events,
                &t.events,
                &t.events,
                &t.events
            ]
        );
        assert_eq!(sink.records[4].key, b"d1");
        assert_eq!(sink.records[0].key, b"t", "alerts are keyed by tenant");
        assert_eq!(sink.records[6].key, b"t", "alerts are keyed by tenant");
        // Processed at 2 000, after the evidence (1 004): the hour runs from the trip.
        assert_eq!(f.processor.next_deadline(), Some(2_000 + 3_600_000));
        let mut sink2 = VecSink::default();
        let batch = f.processor.prepare_commit(2_000, &mut sink2).unwrap();
        assert_eq!(sink2.records.len(), 1);
        assert_eq!(sink2.records[0].topic, t.changelog);
        assert_eq!(
            sink2.records[0].partition,
            Some(0),
            "changelog partition = input partition"
        );
        assert!(sink2.records[0].payload.is_some());
        assert_eq!(batch.len(), 1);
        assert!(!f.processor.has_dirty());
    }

    #[test]
    fn the_sweep_forgets_idle_states_in_budgeted_steps() {
        let mut f = fixture();
        let vt = f.topics.verdicts.clone();
        let mut sink = VecSink::default();
        for (i, m) in ["a@x.com", "b@x.com", "c@x.com"].iter().enumerate() {
            let v = verdict(&f.codec, m, "m1", 1_000, VerdictKind::Spam);
            f.processor
                .handle(
                    rec(&vt, i as i64, Some(m.as_bytes()), Some(&v)),
                    1_000,
                    &mut sink,
                )
                .unwrap();
        }
        let batch = f.processor.prepare_commit(1_000, &mut sink).unwrap();
        f.processor.store().write(batch).unwrap();
        let stored = |f: &Fixture| {
            let mut n = 0;
            f.processor
                .store()
                .for_each_state(0, |_, _| {
                    n += 1;
                    Ok(())
                })
                .unwrap();
            n
        };
        assert_eq!(stored(&f), 3);
        let ttl = Policy::default().state_idle_ttl_ms;
        // Not idle yet: a full round forgets nothing.
        assert_eq!(f.processor.sweep(1_000 + ttl, 10).unwrap(), (0, true));
        // Idle: two steps of budget 2 go round the partition.
        let later = 1_000 + ttl + 1;
        assert_eq!(f.processor.sweep(later, 2).unwrap(), (2, false));
        assert_eq!(f.processor.sweep(later, 2).unwrap(), (1, true));
        let mut sink = VecSink::default();
        let batch = f.processor.prepare_commit(later, &mut sink).unwrap();
        assert_eq!(sink.records.len(), 3);
        assert!(sink
            .records
            .iter()
            .all(|r| r.topic == f.topics.changelog && r.payload.is_none()));
        f.processor.store().write(batch).unwrap();
        assert_eq!(stored(&f), 0, "local state is empty again");
    }

    #[test]
    fn oversized_fields_go_to_the_dlq_and_count_nothing() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        let vt = f.topics.verdicts.clone();
        // The record: a 300 000-character message id, whose block evidence and changelog
        // state could not be produced (MessageSizeTooLarge stopped every mailbox).
        for i in 0..4 {
            let id = format!("{i}{}", "x".repeat(300_000));
            let v = verdict(&f.codec, "a@x.com", &id, 1_000 + i, VerdictKind::Spam);
            f.processor
                .handle(rec(&vt, i, Some(b"a@x.com"), Some(&v)), 2_000, &mut sink)
                .unwrap();
        }
        assert_eq!(sink.records.len(), 4);
        for r in &sink.records {
            assert_eq!(r.topic, f.topics.dlq);
            let reason = &r.headers[0].1;
            assert_eq!(
                std::str::from_utf8(reason).unwrap(),
                "field `message_id` is 300001 bytes, over the limit of 256 (limits.max_id_bytes)"
            );
        }
        assert!(!f.processor.has_dirty(), "nothing was counted");
    }

    #[test]
    fn a_dlq_copy_too_large_for_the_broker_is_cut_and_says_so() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        let vt = f.topics.verdicts.clone();
        let big = vec![7u8; 1_010_000];
        f.processor
            .handle(rec(&vt, 3, Some(b"a@x.com"), Some(&big)), 1, &mut sink)
            .unwrap();
        let r = &sink.records[0];
        let limit = Limits::default().max_record_bytes;
        let size = r.key.len()
            + r.payload.as_ref().map_or(0, Vec::len)
            + r.headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        assert!(size <= limit, "{size} > {limit}");
        assert!(
            r.payload.as_ref().unwrap().len() > limit / 2,
            "most of it is kept"
        );
        let truncated = r
            .headers
            .iter()
            .find(|(k, _)| k == crate::pipeline::dlq::TRUNCATED_HEADER)
            .expect("truncation header");
        assert_eq!(truncated.1, b"value=1010000,key=7");
        assert_eq!(r.key, b"a@x.com");
    }

    #[test]
    fn bad_input_goes_to_the_dlq_with_reason_and_position() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        let good = verdict(&f.codec, "a@x.com", "m", 1, VerdictKind::Spam);
        let vt = f.topics.verdicts.clone();
        f.processor
            .handle(rec(&vt, 7, None, Some(&good)), 1, &mut sink)
            .unwrap();
        f.processor
            .handle(rec(&vt, 8, Some(b"b@x.com"), Some(&good)), 1, &mut sink)
            .unwrap();
        f.processor
            .handle(rec(&vt, 9, Some(b"a@x.com"), Some(b"junk")), 1, &mut sink)
            .unwrap();
        f.processor
            .handle(rec(&vt, 10, Some(b"a@x.com"), None), 1, &mut sink)
            .unwrap();
        assert_eq!(sink.records.len(), 4);
        for (r, offset) in sink.records.iter().zip(7..) {
            assert_eq!(r.topic, f.topics.dlq);
            let h: HashMap<_, _> = r.headers.iter().cloned().collect();
            assert_eq!(
                h["mailguard.source.offset"],
                offset.to_string().into_bytes()
            );
            assert_eq!(h["mailguard.source.topic"], vt.as_bytes());
            assert!(!h["mailguard.error.reason"].is_empty());
        }
        assert_eq!(sink.records[2].payload.as_deref(), Some(&b"junk"[..]));
        assert!(!f.processor.has_dirty());
    }

    #[test]
    fn a_due_timer_unblocks_and_revoked_partitions_are_ignored() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        trip_a(&mut f, &mut sink);
        let until = 2_000 + 3_600_000; // tripped at 2 000 (see trip_a)
        let mut sink = VecSink::default();
        assert_eq!(f.processor.tick(until - 1, &mut sink).unwrap(), 0);
        assert_eq!(f.processor.tick(until, &mut sink).unwrap(), 1);
        assert_eq!(
            sink.records.len(),
            2,
            "UNBLOCKED block record + MAILBOX_UNBLOCKED event"
        );
        // The incident's result deadline (4 h after the trip, processor time) is the next timer.
        assert_eq!(f.processor.next_deadline(), Some(2_000 + 14_400_000));
        f.processor.revoke(0);
        assert!(f.processor.owned().is_empty());
    }

    fn scan_result(codec: &Codec, device: &str, mailbox: Option<&str>) -> Vec<u8> {
        let incident = crate::policy::ids::incident_id("a@x.com", 1, 1_004);
        let r = ScanResult {
            request_id: crate::policy::ids::request_id(&incident, device).to_string(),
            incident_id: incident.to_string(),
            tenant_id: "t".into(),
            device_id: device.into(),
            mailbox: mailbox.map(str::to_owned),
            status: crate::policy::ScanStatus::Clean,
            threats: Vec::new(),
            started_at: 1,
            completed_at: 2,
        };
        let mut out = Vec::new();
        codec.encode_scan_result(&r, &mut out).unwrap();
        out
    }

    fn reason(c: &crate::pipeline::sink::Captured) -> String {
        let h: HashMap<_, _> = c.headers.iter().cloned().collect();
        String::from_utf8(h["mailguard.error.reason"].clone()).unwrap()
    }

    /// An endpoint's result is re-keyed by its mailbox, bytes unchanged; one that cannot be
    /// routed, or whose key is not its device, goes to the DLQ with its reason; the re-keyed copy
    /// is applied to the incident's state.
    #[test]
    fn scan_results_are_re_keyed_by_mailbox_then_applied_to_the_incident() {
        let mut f = fixture();
        let mut sink = VecSink::default();
        trip_a(&mut f, &mut sink);
        let (raw, routed) = (
            f.topics.scan_results.clone(),
            f.topics.scan_results_routed.clone(),
        );
        let mut sink = VecSink::default();
        let good = scan_result(&f.codec, "d1", Some("A@x.com"));
        let none = scan_result(&f.codec, "d2", None);
        f.processor
            .handle(rec(&raw, 0, Some(b"d1"), Some(&good)), 3_000, &mut sink)
            .unwrap();
        f.processor
            .handle(rec(&raw, 1, Some(b"d2"), Some(&none)), 3_000, &mut sink)
            .unwrap();
        f.processor
            .handle(rec(&raw, 2, Some(b"d9"), Some(&good)), 3_000, &mut sink)
            .unwrap();
        f.processor
            .handle(rec(&raw, 3, Some(b"d1"), Some(b"junk")), 3_000, &mut sink)
            .unwrap();
        assert_eq!(sink.records.len(), 4, "{:?}", sink.records);
        let fwd = &sink.records[0];
        assert_eq!(
            (fwd.topic.as_str(), &fwd.key[..]),
            (routed.as_str(), &b"a@x.com"[..])
        );
        assert_eq!(fwd.payload.as_deref(), Some(&good[..]));
        assert_eq!(
            fwd.partition, None,
            "partitioned by the key, like the verdicts"
        );
        for (c, why) in sink.records[1..].iter().zip([
            "no mailbox (echo ScanRequest.mailbox)",
            "key `d9` does not match device `d1`",
            "",
        ]) {
            assert_eq!(c.topic, f.topics.dlq);
            assert!(reason(c).starts_with(why), "{}", reason(c));
        }
        // The re-keyed copy reaches the state: SCAN_COMPLETED for d1, and nothing else yet.
        let mut sink = VecSink::default();
        f.processor
            .handle(
                rec(&routed, 0, Some(b"a@x.com"), Some(&good)),
                3_000,
                &mut sink,
            )
            .unwrap();
        assert_eq!(sink.records.len(), 1, "{:?}", sink.records);
        assert_eq!(sink.records[0].topic, f.topics.events);
        let Effect::Event(e) = f
            .codec
            .decode_effect(sink.records[0].payload.as_deref().unwrap())
            .unwrap()
        else {
            panic!("an event")
        };
        assert_eq!(
            (e.kind, e.detail.as_str()),
            (
                crate::policy::EventKind::ScanCompleted,
                "device d1: CLEAN, 0 threats"
            )
        );
        // A copy under another mailbox's key is refused (it would touch another state).
        let mut sink = VecSink::default();
        f.processor
            .handle(
                rec(&routed, 1, Some(b"b@x.com"), Some(&good)),
                3_000,
                &mut sink,
            )
            .unwrap();
        assert_eq!(sink.records[0].topic, f.topics.dlq);
        assert!(reason(&sink.records[0]).contains("does not match mailbox"));
        // A result too large to forward (a newer writer's skipped fields are not bounded by the
        // field limits) is set aside, not sent to fail the transaction.
        f.processor.limits.max_record_bytes = good.len() + 100;
        let mut sink = VecSink::default();
        f.processor
            .handle(rec(&raw, 4, Some(b"d1"), Some(&good)), 3_000, &mut sink)
            .unwrap();
        assert_eq!(sink.records[0].topic, f.topics.dlq);
        assert!(
            reason(&sink.records[0]).starts_with("field `record` is"),
            "{}",
            reason(&sink.records[0])
        );
    }
}
