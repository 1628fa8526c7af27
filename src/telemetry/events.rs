//! Internal events: one struct per thing that happens, whose [`InternalEvent::emit`] writes the
//! log line and bumps the metrics together (the pattern of vector's `internal_events`). A call
//! site cannot log a block without counting it, or count a DLQ record without saying why.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::{unix_now, Metrics, UNBLOCK_GRACE_MS};
use crate::policy::{Millis, Outcome};

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
        m.trips.inc();
        // Strikes beyond 99 share a label: the label set stays bounded whatever the policy says.
        m.blocks
            .with_label_values(&[&self.strike.min(99).to_string()])
            .inc();
        if self.permanent {
            m.permanent_blocks.inc();
        }
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
        m.unblocks.with_label_values(&["expired"]).inc();
        let late_ms = self.blocked_until.map_or(0, |until| self.now - until);
        if late_ms > UNBLOCK_GRACE_MS {
            warn!(mailbox = %self.mailbox, late_ms, "block expired late");
            m.unblocks_late.inc();
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
        m.unblocks.with_label_values(&["support"]).inc();
        m.commands.with_label_values(&["applied"]).inc();
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
        m.commands.with_label_values(&["rejected"]).inc();
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
                m.verdicts_late.inc();
            }
            Outcome::Duplicate => {
                debug!(%mailbox, "duplicate verdict");
                m.verdicts_duplicate.inc();
            }
            Outcome::IgnoredWhileBlocked => {
                debug!(%mailbox, "verdict while blocked");
                m.verdicts_ignored_blocked.inc();
            }
            Outcome::NotOffending | Outcome::Counted | Outcome::Idle => {}
        }
    }
}

/// A record went to the dead-letter topic instead of being processed.
#[derive(Debug, Clone, Copy)]
pub struct DeadLettered<'a> {
    /// `verdicts`, `commands` or a table name (`owners`, `devices`, `tenants`): the metric label.
    pub source: &'a str,
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
        warn!(
            source = self.source,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            "record sent to DLQ"
        );
        m.dlq.with_label_values(&[self.source]).inc();
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
        m.transactions.with_label_values(&["committed"]).inc();
        m.commit_seconds.observe(self.took.as_secs_f64());
        m.batch_records.observe(self.records as f64);
        m.last_commit.set(unix_now());
    }
}

/// The open transaction was aborted; the session ends and a new one redoes the work.
#[derive(Debug, Clone, Copy)]
pub struct TransactionAborted;

impl InternalEvent for TransactionAborted {
    fn emit(self, m: &Metrics) {
        warn!("transaction aborted; uncommitted work is redone by the next session");
        m.transactions.with_label_values(&["aborted"]).inc();
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
            source: "owners",
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
            value(&text, "mailguard_dlq_records_total{source=\"owners\"}"),
            "1"
        );
        let at: f64 = value(&text, "mailguard_last_commit_timestamp_seconds")
            .parse()
            .unwrap();
        assert!(at > 1.6e9, "{at}");
    }
}
