//! Metrics and logging set-up: every metric name lives here, behind a named method. Liveness and
//! readiness live in [`health`].
//!
//! Names follow Prometheus conventions (`mailguard_<what>_total`, `_seconds`; the standard
//! `process_*` names for the process). Labels are bounded enumerations (verdict, strike, reason,
//! result, topic, partition); never a mailbox, tenant or device id, whose cardinality would take
//! Prometheus down before it helped anyone.
//!
//! What happens to mailboxes and transactions is reported through [`events`]: one struct per
//! event whose `emit` both logs and counts, so the log and the metrics never drift apart.

pub mod events;
pub mod health;
pub mod lag;
mod process;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{LogConfig, LogFormat};
use crate::pipeline::dlq;
use crate::policy::{Millis, ScanSkipReason, VerdictKind};
use crate::timers::{Clock, SystemClock};

pub use events::InternalEvent;
pub use health::{Health, STALL_LIMIT};

/// All metrics of one mailguard process, registered in their own registry, with the clock that
/// time-stamps them and paces their per-record warnings.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    policy: PolicyMetrics,
    txn: TxnMetrics,
    state: StateMetrics,
    ready: IntGauge,
    http_requests: IntCounterVec,
    api_view_lag: IntGauge,
    api_view_staleness: Gauge,
    http_shed: IntCounter,
    http_connections: IntGauge,
    process: process::ProcessMetrics,
    clock: Arc<dyn Clock>,
    /// The monotonic reading of `clock` when the metrics were made: the throttles count from it.
    epoch: Instant,
    throttles: Arc<events::Throttles>,
}

/// What the policy did: verdicts, commands, blocks and their outputs.
#[derive(Clone)]
struct PolicyMetrics {
    /// By verdict, resolved once: bumped for every input record.
    verdicts: [IntCounter; 3],
    verdicts_late: IntCounter,
    verdicts_duplicate: IntCounter,
    verdicts_clamped: IntCounter,
    verdicts_ignored_blocked: IntCounter,
    commands: IntCounterVec,
    trips: IntCounter,
    simulated_trips: IntCounter,
    shadow_trips: IntCounter,
    exemptions: ExemptionMetrics,
    scans: ScanMetrics,
    warnings: IntCounter,
    blocks: IntCounterVec,
    permanent_blocks: IntCounter,
    unblocks: IntCounterVec,
    unblocks_late: IntCounter,
    scan_requests: IntCounter,
    scan_skips: IntCounterVec,
    alerts: IntCounter,
    events: IntCounter,
}

/// Transactions, their stages and the records they carry or refuse.
#[derive(Clone)]
struct TxnMetrics {
    dlq: IntCounterVec,
    transactions: IntCounterVec,
    commit_seconds: Histogram,
    processing_latency: Histogram,
    batch_records: Histogram,
    stage_seconds: HistogramVec,
    last_commit: Gauge,
}

/// Owned partitions, local state, timers, restores and the tables.
#[derive(Clone)]
struct StateMetrics {
    restored_records: IntCounter,
    restore_seconds: Histogram,
    table_records: IntCounterVec,
    table_loader_failures: IntCounter,
    assigned_partitions: IntGauge,
    pending_timers: IntGauge,
    next_unblock: Gauge,
    state_mailboxes: IntGaugeVec,
    consumer_lag: IntGaugeVec,
    /// (topic, partition) label pairs of `consumer_lag` currently exported.
    lag_labels: Arc<Mutex<BTreeSet<(String, i32)>>>,
}

/// What one restore of assigned partitions did (see `pipeline::restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Changelog records applied.
    pub records: u64,
    /// Wall time, consumer start-up and watermark look-ups included.
    pub took: Duration,
}

/// Registers `metric` in `registry` and returns it: the one place a metric is registered.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, Histogram::with_opts(opts).expect("valid metric"))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

fn float_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    register(r, Gauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Create every label combination known in advance, so the series exist (at 0) from the start:
/// `rate()` and `increase()` then see the first event instead of a series appearing at 1.
fn touch(c: &IntCounterVec, values: &[&str]) {
    for v in values {
        c.with_label_values(&[*v]);
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Restores take from milliseconds (a small partition) to minutes (a big one from scratch); the
/// 60 s bound is what the `MailguardRestoreSlow` alert counts against.
const RESTORE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The tables (`store::Table::name`).
const TABLES: &[&str] = &["owners", "devices", "tenants", "exemptions"];

/// The product promises an unblock within this long after `blocked_until`.
pub const UNBLOCK_GRACE_MS: Millis = 2_000;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Exempt trips and exemption changes (SPEC §1.11).
#[derive(Clone)]
struct ExemptionMetrics {
    trips: IntCounter,
    changes: IntCounterVec,
}

impl ExemptionMetrics {
    fn register(r: &Registry) -> Self {
        let changes = counter_vec(
            r,
            "mailguard_exemption_changes_total",
            "Exemptions added, removed or expired, by change.",
            &["change"],
        );
        touch(&changes, &["added", "removed", "expired"]);
        ExemptionMetrics {
            trips: counter(
                r,
                "mailguard_exempt_trips_total",
                "Threshold trips of exempt mailboxes (nothing blocked or scanned).",
            ),
            changes,
        }
    }
}

/// Scan results and the end of incidents (issue 22).
#[derive(Clone)]
pub(crate) struct ScanMetrics {
    /// `mailguard_scan_results_total{result}`: completed, or why a result changed nothing.
    pub(crate) results: IntCounterVec,
    /// `mailguard_incidents_closed_total{state}`: remediated or needs_attention.
    pub(crate) closed: IntCounterVec,
    /// `mailguard_scans_overdue_total`: incidents closed with devices that did not report.
    pub(crate) overdue: IntCounter,
    /// `mailguard_scan_results_forwarded_total`: results re-keyed by mailbox.
    pub(crate) forwarded: IntCounter,
}

impl ScanMetrics {
    fn register(r: &Registry) -> Self {
        let results = counter_vec(
            r,
            "mailguard_scan_results_total",
            "Scan results applied to their incident, by result (completed, or why nothing changed).",
            &["result"],
        );
        touch(
            &results,
            &["completed", "unknown_request", "other_tenant", "duplicate"],
        );
        let closed = counter_vec(
            r,
            "mailguard_incidents_closed_total",
            "Incidents ended, by state.",
            &["state"],
        );
        touch(&closed, &["remediated", "needs_attention"]);
        ScanMetrics {
            results,
            closed,
            overdue: counter(
                r,
                "mailguard_scans_overdue_total",
                "Incidents closed with devices that did not report within scan.result_timeout_ms.",
            ),
            forwarded: counter(
                r,
                "mailguard_scan_results_forwarded_total",
                "Scan results re-keyed by mailbox onto the internal scan-results topic.",
            ),
        }
    }
}

impl PolicyMetrics {
    fn register(r: &Registry) -> Self {
        let verdicts = counter_vec(
            r,
            "mailguard_verdicts_total",
            "Verdicts consumed, by verdict.",
            &["verdict"],
        );
        let m = PolicyMetrics {
            verdicts: [VerdictKind::Clean, VerdictKind::Spam, VerdictKind::Virus]
                .map(|k| verdicts.with_label_values(&[k.as_str()])),
            verdicts_late: counter(
                r,
                "mailguard_verdicts_late_total",
                "Offending verdicts older than the allowed lateness, dropped from counting.",
            ),
            verdicts_duplicate: counter(
                r,
                "mailguard_verdicts_duplicate_total",
                "Offending verdicts whose message_id was already counted for the mailbox.",
            ),
            verdicts_clamped: counter(
                r,
                "mailguard_verdicts_clamped_total",
                "Verdicts whose sent_at lay too far in the future and was clamped to the clock.",
            ),
            verdicts_ignored_blocked: counter(
                r,
                "mailguard_verdicts_ignored_blocked_total",
                "Offending verdicts not counted because the mailbox was blocked when they were sent.",
            ),
            commands: counter_vec(r, "mailguard_commands_total", "Admin commands, by result.", &["result"]),
            trips: counter(r, "mailguard_trips_total", "Threshold trips (each starts a block)."),
            simulated_trips: counter(
                r,
                "mailguard_simulated_trips_total",
                "Threshold trips of ALERT_ONLY tenants' mailboxes (nothing blocked).",
            ),
            shadow_trips: counter(
                r,
                "mailguard_shadow_trips_total",
                "Trips of the shadow policy ([shadow]; event SHADOW_TRIP, nothing blocked).",
            ),
            exemptions: ExemptionMetrics::register(r),
            scans: ScanMetrics::register(r),
            warnings: counter(
                r,
                "mailguard_warnings_total",
                "Early warnings (the window reached policy.warn_threshold).",
            ),
            blocks: counter_vec(r, "mailguard_blocks_total", "Blocks started, by strike.", &["strike"]),
            permanent_blocks: counter(r, "mailguard_permanent_blocks_total", "Permanent blocks started."),
            unblocks: counter_vec(r, "mailguard_unblocks_total", "Blocks ended, by reason.", &["reason"]),
            unblocks_late: counter(
                r,
                "mailguard_unblocks_late_total",
                "Timed blocks that ended more than 2 s after their blocked_until.",
            ),
            scan_requests: counter(r, "mailguard_scan_requests_total", "Scan requests emitted."),
            scan_skips: counter_vec(
                r,
                "mailguard_scan_skips_total",
                "Trips without a scan request, by reason.",
                &["reason"],
            ),
            alerts: counter(r, "mailguard_alerts_total", "Alerts emitted."),
            events: counter(r, "mailguard_events_total", "Event-log records emitted."),
        };
        touch(&m.unblocks, &["expired", "support"]);
        touch(&m.commands, &["applied", "rejected"]);
        touch(
            &m.scan_skips,
            &[
                ScanSkipReason::SyncSecurityOff,
                ScanSkipReason::NoEndpointLicence,
                ScanSkipReason::OwnerUnknown,
                ScanSkipReason::NoDevices,
            ]
            .map(ScanSkipReason::as_str),
        );
        m
    }
}

impl TxnMetrics {
    fn register(r: &Registry) -> Self {
        let m = TxnMetrics {
            dlq: counter_vec(
                r,
                "mailguard_dlq_records_total",
                "Records sent to the dead-letter topic, by source topic kind and reason kind.",
                &["source", "reason"],
            ),
            transactions: counter_vec(r, "mailguard_transactions_total", "Kafka transactions, by result.", &["result"]),
            commit_seconds: histogram(
                r,
                "mailguard_transaction_commit_seconds",
                "Time to flush and commit one transaction.",
                LATENCY_BUCKETS,
            ),
            processing_latency: histogram(
                r,
                "mailguard_processing_latency_seconds",
                "Input record timestamp to the commit of its effects.",
                LATENCY_BUCKETS,
            ),
            batch_records: histogram(
                r,
                "mailguard_transaction_records",
                "Input records per transaction.",
                &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
            ),
            stage_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("mailguard_stage_seconds", "Time spent per pipeline stage and batch.")
                        .buckets(LATENCY_BUCKETS.to_vec()),
                    &["stage"],
                )
                .expect("valid metric"),
            ),
            last_commit: float_gauge(
                r,
                "mailguard_last_commit_timestamp_seconds",
                "When the last transaction committed (Unix seconds; the process start before the first).",
            ),
        };
        touch(&m.transactions, &["committed", "aborted"]);
        for source in dlq::Source::ALL {
            for kind in dlq::Kind::ALL {
                m.dlq.with_label_values(&[source.as_str(), kind.as_str()]);
            }
        }
        m
    }
}

impl StateMetrics {
    fn register(r: &Registry) -> Self {
        let m = StateMetrics {
            restored_records: counter(
                r,
                "mailguard_state_restored_records_total",
                "Changelog records applied to local state during restores.",
            ),
            restore_seconds: histogram(
                r,
                "mailguard_restore_seconds",
                "Duration of one restore of newly assigned partitions from the changelog.",
                RESTORE_BUCKETS,
            ),
            table_records: counter_vec(
                r,
                "mailguard_table_records_total",
                "Directory and tenant table records applied, by table.",
                &["table"],
            ),
            table_loader_failures: counter(
                r,
                "mailguard_table_loader_failures_total",
                "Times the table loader failed (the instance then stops, so a stale directory never looks healthy).",
            ),
            assigned_partitions: gauge(
                r,
                "mailguard_assigned_partitions",
                "Input partitions currently owned by this instance.",
            ),
            pending_timers: gauge(
                r,
                "mailguard_timed_blocks",
                "Keys of owned partitions waiting on a timer: timed blocks, and (since exemptions and incidents) exemption expiries and scan-result deadlines.",
            ),
            next_unblock: float_gauge(
                r,
                "mailguard_next_unblock_timestamp_seconds",
                "Earliest timer deadline on owned partitions (Unix seconds; 0: none): a blocked_until, an exemption's expires_at or an incident's scan-result deadline.",
            ),
            state_mailboxes: gauge_vec(
                r,
                "mailguard_state_mailboxes",
                "Mailbox states held in local state, by owned input partition.",
                &["partition"],
            ),
            consumer_lag: gauge_vec(
                r,
                "mailguard_consumer_lag",
                "Records of an owned input partition not yet read: end (last stable offset) minus position.",
                &["topic", "partition"],
            ),
            lag_labels: Arc::default(),
        };
        touch(&m.table_records, TABLES);
        m
    }
}

impl Metrics {
    /// A fresh set of metrics in a fresh registry (tests get their own; nothing global), on the
    /// system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A fresh set of metrics on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let r = Registry::new();
        let build_info = gauge_vec(
            &r,
            "mailguard_build_info",
            "Always 1; the labels say which build is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let m = Metrics {
            policy: PolicyMetrics::register(&r),
            txn: TxnMetrics::register(&r),
            state: StateMetrics::register(&r),
            ready: gauge(
                &r,
                "mailguard_ready",
                "1 while /readyz succeeds (tables loaded, owned partitions restored).",
            ),
            http_requests: counter_vec(
                &r,
                "mailguard_http_requests_total",
                "HTTP requests served, by handler and status code.",
                &["handler", "code"],
            ),
            api_view_lag: gauge(
                &r,
                "mailguard_api_view_lag_records",
                "Records of mailguard's topics the API's view has not read yet (api.enabled).",
            ),
            api_view_staleness: float_gauge(
                &r,
                "mailguard_api_view_staleness_seconds",
                "Age of the newest point up to which the API's view holds everything committed; past 30 s the API answers 503.",
            ),
            http_shed: counter(
                &r,
                "mailguard_http_requests_shed_total",
                "/v1 requests refused with 503 because the API's concurrency limit was reached.",
            ),
            http_connections: gauge(
                &r,
                "mailguard_http_connections",
                "Open HTTP connections (bounded by the server's connection limit).",
            ),
            process: process::ProcessMetrics::register(&r),
            registry: r,
            epoch: clock.monotonic(),
            clock,
            throttles: Arc::default(),
        };
        // "No commit for N s" counts from the start, not from 1970.
        m.txn.last_commit.set(m.unix_now());
        m
    }

    /// Seconds since the Unix epoch on the wall clock, for `_timestamp_seconds` gauges.
    fn unix_now(&self) -> f64 {
        self.clock.now_ms() as f64 / 1000.0
    }

    /// Milliseconds on the monotonic clock since the metrics were made (for [`events::Throttle`]).
    fn elapsed_ms(&self) -> u64 {
        self.clock
            .monotonic()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// Text exposition for `/metrics`.
    pub fn render(&self) -> String {
        self.process.refresh();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }

    /// A transaction committed: its duration and its size (see [`events::TransactionCommitted`]).
    pub fn committed(&self, took: Duration, records: usize) {
        events::TransactionCommitted { took, records }.emit(self);
    }

    /// Input record timestamp → commit, one observation per record.
    pub fn processing_latency(&self, seconds: f64) {
        self.txn.processing_latency.observe(seconds.max(0.0));
    }

    /// A transaction was aborted (see [`events::TransactionAborted`]).
    pub fn aborted(&self) {
        events::TransactionAborted.emit(self);
    }

    /// Number of owned input partitions.
    pub fn set_assigned_partitions(&self, n: usize) {
        self.state.assigned_partitions.set(n as i64);
    }

    /// The keys waiting on a timer (block expiry, exemption expiry, incident deadline): how many,
    /// and the earliest deadline (epoch ms).
    pub fn set_timers(&self, n: usize, next_deadline: Option<Millis>) {
        self.state.pending_timers.set(n as i64);
        self.state
            .next_unblock
            .set(next_deadline.map_or(0.0, |ms| ms as f64 / 1000.0));
    }

    /// Mailbox states held for an owned partition.
    pub fn set_state_mailboxes(&self, partition: i32, n: i64) {
        self.state
            .state_mailboxes
            .with_label_values(&[&partition.to_string()])
            .set(n);
    }

    /// A partition is no longer owned: its state gauge goes.
    pub fn drop_state_partition(&self, partition: i32) {
        let _ = self
            .state
            .state_mailboxes
            .remove_label_values(&[&partition.to_string()]);
    }

    /// Replace the consumer lag of every owned input partition (from librdkafka statistics);
    /// partitions no longer listed (revoked) lose their series.
    pub fn set_consumer_lags(&self, lags: &[lag::PartitionLag]) {
        let mut exported = self.state.lag_labels.lock().expect("lag labels lock");
        let now: BTreeSet<(String, i32)> = lags
            .iter()
            .map(|l| (l.topic.clone(), l.partition))
            .collect();
        for (topic, partition) in exported.difference(&now) {
            let _ = self
                .state
                .consumer_lag
                .remove_label_values(&[topic.as_str(), &partition.to_string()]);
        }
        for l in lags {
            self.state
                .consumer_lag
                .with_label_values(&[l.topic.as_str(), &l.partition.to_string()])
                .set(l.lag);
        }
        *exported = now;
    }

    /// An HTTP request was answered. `handler` is `metrics`, `healthz`, `readyz`, or the route
    /// template of an API call (`/v1/tenants/{tenant}/mailboxes/{mailbox}`, never a tenant or
    /// a mailbox): a bounded set either way.
    pub fn http_request(&self, handler: &str, code: u16) {
        self.http_requests
            .with_label_values(&[handler, &code.to_string()])
            .inc();
    }

    /// The API's view: records behind, and how stale it is.
    pub fn set_api_view(&self, lag: i64, staleness: Duration) {
        self.api_view_lag.set(lag);
        self.api_view_staleness.set(staleness.as_secs_f64());
    }

    /// A /v1 request was shed (503) by the concurrency limit.
    pub fn http_request_shed(&self) {
        self.http_shed.inc();
    }

    /// An HTTP connection was accepted (`+1`) or closed (`-1`).
    pub fn http_connections_add(&self, delta: i64) {
        self.http_connections.add(delta);
    }

    /// Copy readiness into `mailguard_ready` (called when `/metrics` is scraped).
    pub fn observe_health(&self, health: &Health) {
        self.ready.set(i64::from(health.is_ready()));
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

    use crate::policy::Outcome;

    #[test]
    fn names_follow_conventions_and_render() {
        let m = Metrics::new();
        events::VerdictConsumed {
            kind: VerdictKind::Spam,
        }
        .emit(&m);
        events::PolicyOutcome {
            mailbox: "a@example.com",
            outcome: &Outcome::Tripped {
                strike: 2,
                permanent: false,
            },
            blocked_until: None,
            now: 0,
        }
        .emit(&m);
        events::ScanSkipped {
            mailbox: "a@example.com",
            reason: ScanSkipReason::NoDevices,
        }
        .emit(&m);
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
        // Known label values exist before their first event.
        assert!(
            text.contains("mailguard_transactions_total{result=\"aborted\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "mailguard_dlq_records_total{reason=\"undecodable\",source=\"tenants\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "mailguard_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                name.starts_with("mailguard_") || name.starts_with("process_"),
                "{name}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }

    #[test]
    fn timers_lag_state_and_readiness_gauges() {
        let m = Metrics::new();
        m.set_timers(2, Some(1_500));
        m.set_state_mailboxes(3, 7);
        let lag = |topic: &str, partition, lag| lag::PartitionLag {
            topic: topic.into(),
            partition,
            lag,
        };
        m.set_consumer_lags(&[lag("v", 0, 5), lag("v", 1, 0)]);
        let health = Health::default();
        health.set_ready(true);
        m.observe_health(&health);
        let text = m.render();
        for want in [
            "mailguard_timed_blocks 2",
            "mailguard_next_unblock_timestamp_seconds 1.5",
            "mailguard_state_mailboxes{partition=\"3\"} 7",
            "mailguard_consumer_lag{partition=\"0\",topic=\"v\"} 5",
            "mailguard_consumer_lag{partition=\"1\",topic=\"v\"} 0",
            "mailguard_ready 1",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        // Revoked partitions lose their series; no timed block is 0, not a stale deadline.
        m.set_consumer_lags(&[lag("v", 1, 4)]);
        m.drop_state_partition(3);
        m.set_timers(0, None);
        let text = m.render();
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(!text.contains("mailguard_state_mailboxes{"), "{text}");
        assert!(
            text.contains("mailguard_consumer_lag{partition=\"1\",topic=\"v\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("mailguard_next_unblock_timestamp_seconds 0"),
            "{text}"
        );
    }

    #[test]
    fn restore_durations_land_in_the_buckets_the_alert_uses() {
        let m = Metrics::new();
        events::PartitionsRestored {
            changelog: "mailguard.state",
            partitions: &[0, 1],
            restored: Restored {
                records: 10,
                took: Duration::from_secs(90),
            },
        }
        .emit(&m);
        let text = m.render();
        assert!(
            text.contains("mailguard_restore_seconds_bucket{le=\"60\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("mailguard_restore_seconds_bucket{le=\"+Inf\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailguard_state_restored_records_total 10"),
            "{text}"
        );
    }
}
