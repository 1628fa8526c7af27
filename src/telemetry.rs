//! Metrics and logging set-up: every metric name lives here, behind a named method.
//!
//! Names follow Prometheus conventions (`mailguard_<what>_total`, `_seconds`). Labels are bounded
//! enumerations (verdict, strike, reason, result); never a mailbox, tenant or device id, whose
//! cardinality would take Prometheus down before it helped anyone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::config::{LogConfig, LogFormat};
use crate::policy::{Outcome, ScanSkipReason, VerdictKind};

/// All metrics of one mailguard process, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    verdicts: [IntCounter; 3],
    verdicts_late: IntCounter,
    verdicts_duplicate: IntCounter,
    verdicts_clamped: IntCounter,
    verdicts_ignored_blocked: IntCounter,
    commands: IntCounterVec,
    trips: IntCounter,
    blocks: IntCounterVec,
    permanent_blocks: IntCounter,
    unblocks: IntCounterVec,
    scan_requests: IntCounter,
    scan_skips: IntCounterVec,
    alerts: IntCounter,
    events: IntCounter,
    dlq: IntCounterVec,
    transactions: IntCounterVec,
    commit_seconds: Histogram,
    processing_latency: Histogram,
    batch_records: Histogram,
    restored_records: IntCounter,
    table_records: IntCounterVec,
    assigned_partitions: IntGauge,
    pending_timers: IntGauge,
    stage_seconds: HistogramVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in a fresh registry (tests get their own; nothing global).
    pub fn new() -> Self {
        let r = Registry::new();
        Metrics {
            verdicts: {
                // Resolved once: this counter is bumped for every input record.
                let v = counter_vec(&r, "mailguard_verdicts_total", "Verdicts consumed, by verdict.", &["verdict"]);
                [VerdictKind::Clean, VerdictKind::Spam, VerdictKind::Virus].map(|k| v.with_label_values(&[k.as_str()]))
            },
            verdicts_late: counter(
                &r,
                "mailguard_verdicts_late_total",
                "Offending verdicts older than the allowed lateness, dropped from counting.",
            ),
            verdicts_duplicate: counter(
                &r,
                "mailguard_verdicts_duplicate_total",
                "Offending verdicts whose message_id was already counted for the mailbox.",
            ),
            verdicts_clamped: counter(
                &r,
                "mailguard_verdicts_clamped_total",
                "Verdicts whose sent_at lay too far in the future and was clamped to the clock.",
            ),
            verdicts_ignored_blocked: counter(
                &r,
                "mailguard_verdicts_ignored_blocked_total",
                "Offending verdicts not counted because the mailbox was blocked when they were sent.",
            ),
            commands: counter_vec(&r, "mailguard_commands_total", "Admin commands, by result.", &["result"]),
            trips: counter(&r, "mailguard_trips_total", "Threshold trips (each starts a block)."),
            blocks: counter_vec(&r, "mailguard_blocks_total", "Blocks started, by strike.", &["strike"]),
            permanent_blocks: counter(&r, "mailguard_permanent_blocks_total", "Permanent blocks started."),
            unblocks: counter_vec(&r, "mailguard_unblocks_total", "Blocks ended, by reason.", &["reason"]),
            scan_requests: counter(&r, "mailguard_scan_requests_total", "Scan requests emitted."),
            scan_skips: counter_vec(
                &r,
                "mailguard_scan_skips_total",
                "Trips without a scan request, by reason.",
                &["reason"],
            ),
            alerts: counter(&r, "mailguard_alerts_total", "Alerts emitted."),
            events: counter(&r, "mailguard_events_total", "Event-log records emitted."),
            dlq: counter_vec(
                &r,
                "mailguard_dlq_records_total",
                "Records sent to the dead-letter topic, by source topic kind.",
                &["source"],
            ),
            transactions: counter_vec(
                &r,
                "mailguard_transactions_total",
                "Kafka transactions, by result.",
                &["result"],
            ),
            commit_seconds: histogram(
                &r,
                "mailguard_transaction_commit_seconds",
                "Time to flush and commit one transaction.",
                LATENCY_BUCKETS.to_vec(),
            ),
            processing_latency: histogram(
                &r,
                "mailguard_processing_latency_seconds",
                "Input record timestamp to the commit of its effects.",
                LATENCY_BUCKETS.to_vec(),
            ),
            batch_records: histogram(
                &r,
                "mailguard_transaction_records",
                "Input records per transaction.",
                vec![1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
            ),
            restored_records: counter(
                &r,
                "mailguard_state_restored_records_total",
                "Changelog records applied to local state during restores.",
            ),
            table_records: counter_vec(
                &r,
                "mailguard_table_records_total",
                "Directory and tenant table records applied, by table.",
                &["table"],
            ),
            assigned_partitions: gauge(
                &r,
                "mailguard_assigned_partitions",
                "Input partitions currently owned by this instance.",
            ),
            pending_timers: gauge(&r, "mailguard_timed_blocks", "Timed blocks in force on owned partitions."),
            stage_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new("mailguard_stage_seconds", "Time spent per pipeline stage and batch.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["stage"],
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            registry: r,
        }
    }

    /// Text exposition for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    /// A verdict was consumed.
    pub fn verdict(&self, kind: VerdictKind) {
        let i = match kind {
            VerdictKind::Clean => 0,
            VerdictKind::Spam => 1,
            VerdictKind::Virus => 2,
        };
        self.verdicts[i].inc();
    }

    /// A verdict's sent_at was clamped.
    pub fn clamped(&self) {
        self.verdicts_clamped.inc();
    }

    /// Record what the policy did with one input.
    pub fn outcome(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Late => self.verdicts_late.inc(),
            Outcome::Duplicate => self.verdicts_duplicate.inc(),
            Outcome::IgnoredWhileBlocked => self.verdicts_ignored_blocked.inc(),
            Outcome::Tripped { strike, permanent } => {
                self.trips.inc();
                self.blocks
                    .with_label_values(&[&strike.min(&99).to_string()])
                    .inc();
                if *permanent {
                    self.permanent_blocks.inc();
                }
            }
            Outcome::Unblocked => self.unblocks.with_label_values(&["expired"]).inc(),
            Outcome::SupportUnblocked => {
                self.unblocks.with_label_values(&["support"]).inc();
                self.commands.with_label_values(&["applied"]).inc();
            }
            Outcome::CommandRejected => self.commands.with_label_values(&["rejected"]).inc(),
            Outcome::NotOffending | Outcome::Counted | Outcome::Idle => {}
        }
    }

    /// A scan request was emitted.
    pub fn scan_request(&self) {
        self.scan_requests.inc();
    }

    /// A trip emitted no scan request.
    pub fn scan_skipped(&self, reason: ScanSkipReason) {
        self.scan_skips.with_label_values(&[reason.as_str()]).inc();
    }

    /// An alert was emitted.
    pub fn alert(&self) {
        self.alerts.inc();
    }

    /// An event-log record was emitted.
    pub fn event(&self) {
        self.events.inc();
    }

    /// A record went to the DLQ; `source` is `verdicts`, `commands` or a table name.
    pub fn dlq(&self, source: &str) {
        self.dlq.with_label_values(&[source]).inc();
    }

    /// A transaction committed: its duration, its size, and the age of its oldest input record.
    pub fn committed(&self, took: Duration, records: usize) {
        self.transactions.with_label_values(&["committed"]).inc();
        self.commit_seconds.observe(took.as_secs_f64());
        self.batch_records.observe(records as f64);
    }

    /// Input record timestamp → commit, one observation per record.
    pub fn processing_latency(&self, seconds: f64) {
        self.processing_latency.observe(seconds.max(0.0));
    }

    /// A transaction was aborted.
    pub fn aborted(&self) {
        self.transactions.with_label_values(&["aborted"]).inc();
    }

    /// Changelog records applied during a restore.
    pub fn restored(&self, n: u64) {
        self.restored_records.inc_by(n);
    }

    /// A table record applied.
    pub fn table_record(&self, table: &str) {
        self.table_records.with_label_values(&[table]).inc();
    }

    /// Number of owned input partitions.
    pub fn set_assigned_partitions(&self, n: usize) {
        self.assigned_partitions.set(n as i64);
    }

    /// Number of timed blocks waiting for expiry.
    pub fn set_pending_timers(&self, n: usize) {
        self.pending_timers.set(n as i64);
    }

    /// Time spent in one pipeline stage (`decode_step`, `produce`, `commit`, `store`).
    pub fn stage(&self, stage: &str, took: Duration) {
        self.stage_seconds
            .with_label_values(&[stage])
            .observe(took.as_secs_f64());
    }
}

/// Liveness and readiness, shared by the pipeline and `/healthz` `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
}

impl Health {
    /// Tables loaded and owned partitions restored: processing.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Whether the pipeline is processing.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// The pipeline stopped with an error it could not recover from.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }
    /// Whether the process is alive and well.
    pub fn is_live(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }
}

/// Install the global tracing subscriber. `RUST_LOG` overrides the configured filter.
pub fn init_logging(cfg: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions_and_render() {
        let m = Metrics::new();
        m.verdict(VerdictKind::Spam);
        m.outcome(&Outcome::Tripped {
            strike: 2,
            permanent: false,
        });
        m.scan_skipped(ScanSkipReason::NoDevices);
        m.committed(Duration::from_millis(3), 10);
        let text = m.render();
        assert!(
            text.contains("mailguard_verdicts_total{verdict=\"SPAM\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailguard_blocks_total{strike=\"2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailguard_scan_skips_total{reason=\"NO_DEVICES\"} 1"),
            "{text}"
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("mailguard_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }
}
