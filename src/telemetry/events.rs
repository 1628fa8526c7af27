//! Internal events: one struct per thing that happens, whose [`InternalEvent::emit`] writes the
//! log line and bumps the metrics together (the pattern of vector's `internal_events`). A call
//! site cannot log a block without counting it, or count a DLQ record without saying why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::{Metrics, Restored, UNBLOCK_GRACE_MS};
use crate::pipeline::dlq::{Kind, Source};
use crate::policy::{Effect, Millis, Outcome, ScanSkipReason, VerdictKind};
use crate::store::Table;

/// Something worth a log line and a metric.
pub trait InternalEvent {
    /// Log it and count it.
    fn emit(self, metrics: &Metrics);
}

/// A trip: the mailbox is blocked with this strike.
#[derive(Debug, Clone, Copy)]
pub struct MailboxBlocked<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// Strike of the new block.
    pub strike: u32,
    /// Whether the block is permanent.
    pub permanent: bool,
}

impl InternalEvent for MailboxBlocked<'_> {
    fn emit(self, m: &Metrics) {
        info!(mailbox = %self.mailbox, strike = self.strike, permanent = self.permanent, "mailbox blocked");
        m.policy.trips.inc();
        // Strikes beyond 99 share a label: the label set stays bounded whatever the policy says.
        m.policy
            .blocks
            .with_label_values(&[&self.strike.min(99).to_string()])
            .inc();
        if self.permanent {
            m.policy.permanent_blocks.inc();
        }
    }
}

/// The shadow policy tripped: it would have blocked (nothing was).
#[derive(Debug, Clone, Copy)]
pub struct ShadowTripped<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// Strike the shadow would have applied.
    pub strike: u32,
    /// Whether that block would have been permanent.
    pub permanent: bool,
    /// An exemption was in force (it would have blocked nothing).
    pub exempt: bool,
}

impl InternalEvent for ShadowTripped<'_> {
    fn emit(self, m: &Metrics) {
        info!(
            mailbox = %self.mailbox,
            strike = self.strike,
            permanent = self.permanent,
            exempt = self.exempt,
            "shadow policy trip: nothing blocked"
        );
        m.policy.shadow_trips.inc();
    }
}

/// A timed block ended (its timer fired, or another input found it expired).
#[derive(Debug, Clone, Copy)]
pub struct BlockExpired<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// The block's end (epoch ms), if known.
    pub blocked_until: Option<Millis>,
    /// When the unblock was published (epoch ms).
    pub now: Millis,
}

impl InternalEvent for BlockExpired<'_> {
    fn emit(self, m: &Metrics) {
        m.policy.unblocks.with_label_values(&["expired"]).inc();
        let late_ms = self.blocked_until.map_or(0, |until| self.now - until);
        if late_ms > UNBLOCK_GRACE_MS {
            warn!(mailbox = %self.mailbox, late_ms, "block expired late");
            m.policy.unblocks_late.inc();
        } else {
            info!(mailbox = %self.mailbox, "block expired");
        }
    }
}

/// Support lifted a block.
#[derive(Debug, Clone, Copy)]
pub struct SupportUnblocked<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
}

impl InternalEvent for SupportUnblocked<'_> {
    fn emit(self, m: &Metrics) {
        info!(mailbox = %self.mailbox, "support unblock");
        m.policy.unblocks.with_label_values(&["support"]).inc();
        m.policy.commands.with_label_values(&["applied"]).inc();
    }
}

/// An admin command was rejected.
#[derive(Debug, Clone, Copy)]
pub struct CommandRejected<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
}

impl InternalEvent for CommandRejected<'_> {
    fn emit(self, m: &Metrics) {
        info!(mailbox = %self.mailbox, "command rejected");
        m.policy.commands.with_label_values(&["rejected"]).inc();
    }
}

/// A scan result was re-keyed by its mailbox (`mailguard_scan_results_forwarded_total`).
#[derive(Debug, Clone, Copy)]
pub struct ScanResultForwarded;

impl InternalEvent for ScanResultForwarded {
    fn emit(self, m: &Metrics) {
        m.policy.scans.forwarded.inc();
    }
}

/// Whatever the policy reported for one input, dispatched to the events above. Outcomes that
/// happen per record (late, duplicate, ignored while blocked) are counted and logged at debug.
#[derive(Debug, Clone, Copy)]
pub struct PolicyOutcome<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// What happened.
    pub outcome: &'a Outcome,
    /// `blocked_until` of the block in force before the input, if any.
    pub blocked_until: Option<Millis>,
    /// Processing time of the input (epoch ms).
    pub now: Millis,
}

impl InternalEvent for PolicyOutcome<'_> {
    fn emit(self, m: &Metrics) {
        let mailbox = self.mailbox;
        match *self.outcome {
            Outcome::Tripped { strike, permanent } => MailboxBlocked {
                mailbox,
                strike,
                permanent,
            }
            .emit(m),
            Outcome::Unblocked => BlockExpired {
                mailbox,
                blocked_until: self.blocked_until,
                now: self.now,
            }
            .emit(m),
            Outcome::SupportUnblocked => SupportUnblocked { mailbox }.emit(m),
            Outcome::CommandRejected => CommandRejected { mailbox }.emit(m),
            Outcome::Late => {
                debug!(%mailbox, "verdict too late to count");
                m.policy.verdicts_late.inc();
            }
            Outcome::Duplicate => {
                debug!(%mailbox, "duplicate verdict");
                m.policy.verdicts_duplicate.inc();
            }
            Outcome::IgnoredWhileBlocked => {
                debug!(%mailbox, "verdict while blocked");
                m.policy.verdicts_ignored_blocked.inc();
            }
            Outcome::SimulatedTrip { strike, permanent } => {
                info!(%mailbox, strike, permanent, "simulated trip (ALERT_ONLY tenant)");
                m.policy.simulated_trips.inc();
            }
            Outcome::ShadowTrip {
                strike,
                permanent,
                exempt,
            } => ShadowTripped {
                mailbox,
                strike,
                permanent,
                exempt,
            }
            .emit(m),
            Outcome::Warned => {
                info!(%mailbox, "early warning");
                m.policy.warnings.inc();
            }
            Outcome::ExemptTrip => {
                info!(%mailbox, "exempt trip: nothing blocked");
                m.policy.exemptions.trips.inc();
            }
            Outcome::ExemptionAdded | Outcome::ExemptionRemoved | Outcome::ExemptionExpired => {
                let change = match *self.outcome {
                    Outcome::ExemptionAdded => "added",
                    Outcome::ExemptionRemoved => "removed",
                    _ => "expired",
                };
                info!(pattern = %mailbox, change, "exemption changed");
                m.policy
                    .exemptions
                    .changes
                    .with_label_values(&[change])
                    .inc();
            }
            Outcome::ScanCompleted => {
                debug!(%mailbox, "scan result recorded");
                let results = &m.policy.scans.results;
                results.with_label_values(&["completed"]).inc();
            }
            Outcome::ScanResultIgnored(why) => {
                debug!(%mailbox, reason = why.as_str(), "scan result changes nothing");
                let results = &m.policy.scans.results;
                results.with_label_values(&[why.as_str()]).inc();
            }
            Outcome::IncidentClosed {
                remediated,
                overdue,
            } => {
                let state = if remediated {
                    "remediated"
                } else {
                    "needs_attention"
                };
                info!(%mailbox, state, overdue, "incident closed");
                m.policy.scans.closed.with_label_values(&[state]).inc();
                if overdue {
                    m.policy.scans.overdue.inc();
                }
            }
            Outcome::NotOffending | Outcome::Counted | Outcome::Idle => {}
        }
    }
}

/// A record went to the dead-letter topic instead of being processed. Per record: its warning
/// is rate-limited ([`Throttle`]), the count is not.
#[derive(Debug, Clone, Copy)]
pub struct DeadLettered<'a> {
    /// Where it came from: the `source` label.
    pub source: Source,
    /// Why, as a kind: the `reason` label.
    pub kind: Kind,
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Why (also in the record's `mailguard.error.reason` header).
    pub reason: &'a str,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self, m: &Metrics) {
        if let Some(suppressed) = m.throttles.dead_letter.admit(m.elapsed_ms()) {
            warn!(
                source = self.source.as_str(),
                topic = self.topic,
                partition = self.partition,
                offset = self.offset,
                reason = self.reason,
                suppressed,
                "record sent to DLQ"
            );
        }
        m.txn
            .dlq
            .with_label_values(&[self.source.as_str(), self.kind.as_str()])
            .inc();
    }
}

/// A verdict was consumed (decoded), whatever it says.
#[derive(Debug, Clone, Copy)]
pub struct VerdictConsumed {
    /// What it says.
    pub kind: VerdictKind,
}

impl InternalEvent for VerdictConsumed {
    fn emit(self, m: &Metrics) {
        // Per record, and most are CLEAN: counted only (a log line here would be the log).
        let i = match self.kind {
            VerdictKind::Clean => 0,
            VerdictKind::Spam => 1,
            VerdictKind::Virus => 2,
        };
        m.policy.verdicts[i].inc();
    }
}

/// A verdict's `sent_at` lay too far in the future and was clamped to the clock.
#[derive(Debug, Clone, Copy)]
pub struct VerdictClamped<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
}

impl InternalEvent for VerdictClamped<'_> {
    fn emit(self, m: &Metrics) {
        debug!(mailbox = %self.mailbox, "verdict sent_at clamped to the clock");
        m.policy.verdicts_clamped.inc();
    }
}

/// An output record of the policy was sent (inside the open transaction).
#[derive(Debug, Clone, Copy)]
pub struct EffectSent<'a> {
    /// The record.
    pub effect: &'a Effect,
}

impl InternalEvent for EffectSent<'_> {
    fn emit(self, m: &Metrics) {
        match self.effect {
            // Blocks are counted by their outcome (`MailboxBlocked`, `BlockExpired`, …).
            Effect::Block(_) => {}
            Effect::Scan(s) => {
                debug!(mailbox = %s.mailbox, device = %s.device_id, "scan requested");
                m.policy.scan_requests.inc();
            }
            Effect::Alert(a) => {
                debug!(mailbox = %a.mailbox, strike = a.strike, "alert sent");
                m.policy.alerts.inc();
                if let Some(reason) = a.scan_skipped_reason {
                    ScanSkipped {
                        mailbox: &a.mailbox,
                        reason,
                    }
                    .emit(m);
                }
            }
            Effect::Event(e) => {
                debug!(mailbox = %e.mailbox, kind = e.kind.as_str(), "event recorded");
                m.policy.events.inc();
            }
            // Counted by their outcome (`mailguard_exemption_changes_total`).
            Effect::Exemption(_) => {}
        }
    }
}

/// A trip requested no scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanSkipped<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// Why.
    pub reason: ScanSkipReason,
}

impl InternalEvent for ScanSkipped<'_> {
    fn emit(self, m: &Metrics) {
        debug!(mailbox = %self.mailbox, reason = self.reason.as_str(), "no scan requested");
        m.policy
            .scan_skips
            .with_label_values(&[self.reason.as_str()])
            .inc();
    }
}

/// A stage of a commit, timed (`mailguard_stage_seconds{stage}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Changelog records of the changed states sent.
    StageChangelog,
    /// Every record of the transaction acknowledged.
    Deliver,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    CommitTransaction,
    /// The RocksDB batch written after the commit.
    Store,
}

impl Stage {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::StageChangelog => "stage_changelog",
            Stage::Deliver => "deliver",
            Stage::SendOffsets => "send_offsets",
            Stage::CommitTransaction => "commit_transaction",
            Stage::Store => "store",
        }
    }
}

/// One stage of a commit took this long.
#[derive(Debug, Clone, Copy)]
pub struct StageTimed {
    /// The stage.
    pub stage: Stage,
    /// How long it took.
    pub took: Duration,
}

impl InternalEvent for StageTimed {
    fn emit(self, m: &Metrics) {
        m.txn
            .stage_seconds
            .with_label_values(&[self.stage.as_str()])
            .observe(self.took.as_secs_f64());
    }
}

/// A table record (upsert or tombstone) was applied to the local cache. Per record: counted
/// only.
#[derive(Debug, Clone, Copy)]
pub struct TableRecordApplied {
    /// The table.
    pub table: Table,
}

impl InternalEvent for TableRecordApplied {
    fn emit(self, m: &Metrics) {
        m.state
            .table_records
            .with_label_values(&[self.table.name()])
            .inc();
    }
}

/// The table loader failed; the instance stops (a stale directory must not look healthy).
#[derive(Clone, Copy)]
pub struct TableLoaderFailed<'a> {
    /// Why.
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for TableLoaderFailed<'_> {
    fn emit(self, m: &Metrics) {
        error!(error = %self.error, "table loader failed; stopping");
        m.state.table_loader_failures.inc();
    }
}

/// Newly assigned partitions were restored from the changelog.
#[derive(Debug, Clone, Copy)]
pub struct PartitionsRestored<'a> {
    /// The changelog topic.
    pub changelog: &'a str,
    /// The partitions.
    pub partitions: &'a [i32],
    /// What the restore did.
    pub restored: Restored,
}

impl InternalEvent for PartitionsRestored<'_> {
    fn emit(self, m: &Metrics) {
        let took = self.restored.took;
        info!(changelog = %self.changelog, partitions = ?self.partitions, applied = self.restored.records, took_ms = took.as_millis() as u64, "partitions restored");
        m.state.restored_records.inc_by(self.restored.records);
        m.state.restore_seconds.observe(took.as_secs_f64());
    }
}

/// At most one log line per `every` for an event that can happen per record, saying how many
/// were left unsaid since the last one (the counts are never throttled). Driven by the
/// monotonic clock of [`Metrics`], so a manual clock drives it in tests.
#[derive(Debug)]
pub struct Throttle {
    every_ms: u64,
    /// Monotonic ms (see [`Metrics::elapsed_ms`]) from which the next line may be logged.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle of one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every_ms: every.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged at `now_ms`: then how many were suppressed before it.
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        let won = now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + self.every_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if won {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// How often a per-record warning may be logged.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The throttles of the per-record warnings, shared by every clone of [`Metrics`].
#[derive(Debug)]
pub struct Throttles {
    /// [`DeadLettered`].
    pub dead_letter: Throttle,
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles {
            dead_letter: Throttle::new(WARN_EVERY),
        }
    }
}

/// A transaction committed (outputs, changelog and input offsets).
#[derive(Debug, Clone, Copy)]
pub struct TransactionCommitted {
    /// From the start of the commit to local state written.
    pub took: Duration,
    /// Input records in the transaction.
    pub records: usize,
}

impl InternalEvent for TransactionCommitted {
    fn emit(self, m: &Metrics) {
        debug!(
            records = self.records,
            took_ms = self.took.as_millis() as u64,
            "transaction committed"
        );
        m.txn.transactions.with_label_values(&["committed"]).inc();
        m.txn.commit_seconds.observe(self.took.as_secs_f64());
        m.txn.batch_records.observe(self.records as f64);
        m.txn.last_commit.set(m.unix_now());
    }
}

/// The open transaction was aborted; the session ends and a new one redoes the work.
#[derive(Debug, Clone, Copy)]
pub struct TransactionAborted;

impl InternalEvent for TransactionAborted {
    fn emit(self, m: &Metrics) {
        warn!("transaction aborted; uncommitted work is redone by the next session");
        m.txn.transactions.with_label_values(&["aborted"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{series} missing in {text}"))
    }

    #[test]
    fn an_unblock_more_than_two_seconds_late_is_counted_as_late() {
        let m = Metrics::new();
        let expired = |until, now| BlockExpired {
            mailbox: "a@example.com",
            blocked_until: Some(until),
            now,
        };
        expired(10_000, 12_000).emit(&m); // exactly at the grace: on time
        expired(10_000, 12_001).emit(&m); // late
        BlockExpired {
            mailbox: "b@example.com",
            blocked_until: None,
            now: 99,
        }
        .emit(&m);
        let text = m.render();
        assert_eq!(
            value(&text, "mailguard_unblocks_total{reason=\"expired\"}"),
            "3"
        );
        assert_eq!(value(&text, "mailguard_unblocks_late_total"), "1");
    }

    #[test]
    fn commits_aborts_and_dead_letters_count() {
        let m = Metrics::new();
        TransactionCommitted {
            took: Duration::from_millis(7),
            records: 3,
        }
        .emit(&m);
        TransactionAborted.emit(&m);
        DeadLettered {
            source: Source::Table(crate::store::Table::Owners),
            kind: Kind::MissingKey,
            topic: "directory.mailboxes",
            partition: 1,
            offset: 42,
            reason: "missing or non-UTF-8 key",
        }
        .emit(&m);
        let text = m.render();
        assert_eq!(
            value(&text, "mailguard_transactions_total{result=\"committed\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "mailguard_transactions_total{result=\"aborted\"}"),
            "1"
        );
        assert_eq!(
            value(
                &text,
                "mailguard_dlq_records_total{reason=\"missing_key\",source=\"owners\"}"
            ),
            "1"
        );
        let at: f64 = value(&text, "mailguard_last_commit_timestamp_seconds")
            .parse()
            .unwrap();
        assert!(at > 1.6e9, "{at}");
    }

    #[test]
    fn a_per_record_warning_is_logged_once_per_interval_and_says_how_many_it_left_out() {
        let t = Throttle::new(Duration::from_millis(100));
        assert_eq!(t.admit(0), Some(0));
        assert_eq!(t.admit(50), None);
        assert_eq!(t.admit(99), None);
        assert_eq!(t.admit(100), Some(2));
        assert_eq!(t.admit(150), None);
        assert_eq!(t.admit(1_000), Some(1));
    }

    #[test]
    fn the_manual_clock_drives_the_throttle_of_dead_letter_warnings() {
        let clock = crate::timers::ManualClock::frozen(0);
        let m = Metrics::with_clock(std::sync::Arc::new(clock.clone()));
        let dead_letter = || m.throttles.dead_letter.admit(m.elapsed_ms());
        assert_eq!(dead_letter(), Some(0));
        assert_eq!(dead_letter(), None, "no time has passed");
        clock.advance(WARN_EVERY.as_millis() as i64);
        assert_eq!(dead_letter(), Some(1));
    }
}
