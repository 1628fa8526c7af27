//! The only place where the adapters meet: Kafka in, policy core, Kafka and RocksDB out.
//!
//! - [`tables`] loads the directory and tenant tables into the local cache and follows them.
//! - [`session`] drives one exactly-once consumer/producer session; [`restore`] brings a
//!   partition's state up to date before it is processed.
//! - [`processor`] decodes one record, steps the policy core and stages its effects.
//! - [`sink`] is where records go (the transactional producer, or a vector in tests); [`dlq`]
//!   is where refused input goes, from the processor and the table loader alike.
//! - [`txn`] types the errors of transactional calls and decides between retry, abort and a new
//!   session.
//! - [`directory`] is the core's read-only view of the tables.
//! - [`watchdog`] notices a librdkafka call that outlives its own timeout.

pub mod directory;
pub mod dlq;
pub mod processor;
pub mod restore;
pub mod session;
pub mod sink;
pub mod tables;
pub mod txn;
pub mod watchdog;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use tracing::{error, info, warn};

use crate::codec::{Codec, RecordType};
use crate::config::Config;
use crate::kafka::{admin, client, preflight, KafkaError};
use crate::store::{Store, StoreError};
use crate::telemetry::{Health, Metrics};
use crate::timers::Clock;
use crate::wiring;

use self::directory::TableDirectory;
use self::processor::Processor;
use self::session::{run_session, SessionDeps, SessionError};
use self::tables::TableError;
use self::watchdog::Watchdog;

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Kafka set-up failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The local store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wire format could not be set up (schema registry, writer schemas).
    #[error(transparent)]
    Wire(#[from] wiring::WireError),
    /// The table loader failed.
    #[error(transparent)]
    Tables(#[from] TableError),
    /// A session failed in a way a new session cannot fix, or too often in a row.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A librdkafka call outlived its timeout (see [`watchdog`]): only a restart recovers.
    #[error("librdkafka's {what} has not returned, {overdue_s} s past its timeout and the grace; exiting so that a restart recovers (exactly once holds: the next instance fences the stuck transaction)")]
    Stuck {
        /// The call.
        what: &'static str,
        /// Seconds past the grace.
        overdue_s: u64,
    },
    /// The pipeline did not finish its shutdown in time.
    #[error("shutdown did not finish within {0} s; exiting without it (as after a crash, the broker aborts the open transaction)")]
    ShutdownTimeout(u64),
}

/// How long a shutdown may take: the last commit and leaving the group take seconds at most
/// on a healthy cluster. Below the chart's `terminationGracePeriodSeconds` (60 s), so that
/// mailguard says why it stops rather than being killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(40);

/// How long the start-up checks wait for the cluster to describe the topics.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the pipeline writes, by topic: the schemas registered with a registry at start.
pub fn outputs(cfg: &Config) -> Vec<(&str, RecordType)> {
    let t = &cfg.topics;
    vec![
        (t.blocks.as_str(), RecordType::MailboxBlock),
        (t.scan_requests.as_str(), RecordType::ScanRequest),
        (t.alerts.as_str(), RecordType::Alert),
        (t.events.as_str(), RecordType::EventLogEntry),
    ]
}

/// Check that the input topics and the changelog are co-partitioned.
fn check_partitioning(cfg: &Config) -> Result<i32, KafkaError> {
    let consumer: BaseConsumer = client::reader(&cfg.kafka, "metadata").create()?;
    let t = &cfg.topics;
    let pv = admin::partition_count(&consumer, &t.verdicts)?;
    for other in [&t.commands, &t.changelog, &t.scan_results_routed] {
        let po = admin::partition_count(&consumer, other)?;
        if po != pv {
            return Err(KafkaError::NotCoPartitioned {
                a: t.verdicts.clone(),
                pa: pv,
                b: other.clone(),
                pb: po,
            });
        }
    }
    Ok(pv)
}

/// Run mailguard until `shutdown` completes: create topics if configured, load the tables, then
/// process exactly once, rebuilding the session after recoverable failures.
pub async fn run(
    cfg: Config,
    metrics: Metrics,
    health: Health,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PipelineError> {
    let watchdog = Arc::new(Watchdog::default());
    let early = early_producer(&cfg, &watchdog);
    let (store, codec) = prepare(&cfg).await?;
    let tenants = Arc::new(RwLock::new(HashMap::new()));
    let exemptions = directory::ExemptionMap::default();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tables::spawn(
        &cfg,
        store.clone(),
        codec.clone(),
        tenants.clone(),
        exemptions.clone(),
        metrics.clone(),
        stop.clone(),
    )?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let directory = TableDirectory::new(
        store.clone(),
        codec.clone(),
        tenants,
        cfg.tenant_defaults.to_settings(),
    )
    .with_exemptions(exemptions, cfg.limits.max_exemptions_per_tenant);
    let deps = SessionDeps {
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        clock,
        watchdog: watchdog.clone(),
    };
    let worker = spawn_worker(
        deps,
        early,
        loader,
        directory,
        store,
        codec,
        stop.clone(),
        done_tx,
    );
    let stopped = supervise(shutdown, &stop, &mut done_rx, &watchdog, SHUTDOWN_GRACE).await;
    stop.store(true, Ordering::Relaxed);
    // The pipeline thread is joined only once it has said it is done: a thread stuck in
    // librdkafka is left behind, and the process exits around it.
    let result = match stopped {
        Ok(()) => tokio::task::spawn_blocking(move || worker.join().expect("pipeline thread"))
            .await
            .expect("join"),
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        error!(error = %e, "pipeline stopped");
        health.set_failed();
    }
    result
}

/// The transactional producer being made ready on a thread of its own.
type EarlyProducer = std::thread::JoinHandle<Option<session::ReadyProducer>>;

/// Start the transactional producer and its `init_transactions` at once, beside the topic
/// checks, the preflight and the table load, rather than after them. After a `kill -9` the
/// broker must first abort the predecessor's open transaction: librdkafka's `InitProducerId`
/// gets CONCURRENT_TRANSACTIONS and tries again only after a fixed 500 ms (as it does when no
/// connection to the coordinator is up yet), so `init_transactions` takes 0.6–1.3 s
/// (measured, e2e bench's restart), which the rest of the start-up now hides. A failure here is
/// met again, and reported, by the first session.
fn early_producer(cfg: &Config, watchdog: &Arc<Watchdog>) -> EarlyProducer {
    let (cfg, watchdog) = (cfg.clone(), watchdog.clone());
    std::thread::Builder::new()
        .name("mailguard-txn-init".into())
        .spawn(move || session::ready_producer(&cfg, &watchdog).ok())
        .expect("spawn producer init thread")
}

/// What must hold before any work starts: topics (created if configured), the connection and
/// ACLs (preflight), co-partitioning, the state directory, and the codec (registry).
async fn prepare(cfg: &Config) -> Result<(Store, Codec), PipelineError> {
    if cfg.topics.create_missing {
        admin::ensure_topics(cfg).await?;
    }
    let partitions = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            // Wrong credentials, an untrusted certificate or a missing ACL stop here, named.
            preflight::check(&cfg, PREFLIGHT_TIMEOUT)?;
            check_partitioning(&cfg)
        })
        .await
        .expect("metadata task")?
    };
    info!(partitions, "input topics co-partitioned");
    std::fs::create_dir_all(&cfg.state.dir).map_err(|e| StoreError::Corrupt {
        what: "state directory",
        reason: format!("{}: {e}", cfg.state.dir.display()),
    })?;
    let store = Store::open(&cfg.state.dir)?;
    let codec = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || wiring::codec_for(&cfg, &outputs(&cfg)))
            .await
            .expect("codec task")?
    };
    Ok((store, codec))
}

/// The pipeline thread: sessions until `stop` (or a fatal error), then the table loader's end;
/// says so on `done`.
#[allow(clippy::too_many_arguments)]
fn spawn_worker(
    deps: SessionDeps,
    early: EarlyProducer,
    loader: tables::TableLoader,
    directory: TableDirectory,
    store: Store,
    codec: Codec,
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Sender<()>,
) -> std::thread::JoinHandle<Result<(), PipelineError>> {
    std::thread::Builder::new()
        .name("mailguard-pipeline".into())
        .spawn(move || {
            let result = pipeline_thread(
                &deps,
                early,
                &loader.loaded,
                || {
                    Processor::new(
                        codec.clone(),
                        deps.cfg.core_policy(),
                        deps.cfg.limits.clone(),
                        directory.clone(),
                        store.clone(),
                        deps.metrics.clone(),
                        deps.cfg.topics.clone(),
                    )
                },
                &stop,
            );
            stop.store(true, Ordering::Relaxed);
            let tables = loader.thread.join().expect("table loader thread");
            let _ = done.send(());
            result.and(tables.map_err(PipelineError::from))
        })
        .expect("spawn pipeline thread")
}

/// Wait until the pipeline thread is done, by itself or after `shutdown` has set `stop` (then
/// at most `grace`), checking the watchdog once a second. `Err` means the thread is not done
/// and should not be waited for.
async fn supervise(
    shutdown: impl Future<Output = ()>,
    stop: &AtomicBool,
    done: &mut tokio::sync::oneshot::Receiver<()>,
    watchdog: &Watchdog,
    grace: Duration,
) -> Result<(), PipelineError> {
    let overdue = async {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            check.tick().await;
            if let Some(o) = watchdog.overdue(Instant::now()) {
                return PipelineError::Stuck {
                    what: o.what,
                    overdue_s: o.by.as_secs(),
                };
            }
        }
    };
    tokio::pin!(overdue);
    tokio::select! {
        _ = &mut *done => return Ok(()),
        e = &mut overdue => return Err(e),
        _ = shutdown => {}
    }
    info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = done => Ok(()),
        e = overdue => Err(e),
        _ = tokio::time::sleep(grace) => Err(PipelineError::ShutdownTimeout(grace.as_secs())),
    }
}

fn pipeline_thread(
    deps: &SessionDeps,
    early: EarlyProducer,
    loaded: &std::sync::mpsc::Receiver<()>,
    mut new_processor: impl FnMut() -> Processor,
    stop: &AtomicBool,
) -> Result<(), PipelineError> {
    // Tables first: a trip needs the directory, and a trip computed against a half-loaded
    // directory would report OWNER_UNKNOWN for an owner that exists.
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match loaded.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // The loader ended early; its error is reported by the caller.
                return Ok(());
            }
        }
    }
    // The producer made ready beside the start-up; `None` (it failed, or its thread did) and the
    // first session opens one itself, meeting the failure again and reporting it.
    let mut early = early.join().ok().flatten();
    let mut failures = 0u32;
    loop {
        let started = std::time::Instant::now();
        let result = run_session(deps, new_processor(), stop, early.take());
        // A session that ran for a while was healthy: count failures in a row, not in a lifetime.
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() && failures < 10 => {
                failures += 1;
                let backoff = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                warn!(error = %e, failures, backoff_ms = backoff.as_millis() as u64, "session failed; starting a new one");
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_shutdown_that_does_not_finish_in_time_is_given_up_on() {
        let (_done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
        let stop = AtomicBool::new(false);
        let r = runtime().block_on(supervise(
            async {},
            &stop,
            &mut done,
            &Watchdog::default(),
            Duration::from_millis(50),
        ));
        assert!(matches!(r, Err(PipelineError::ShutdownTimeout(_))), "{r:?}");
        assert!(
            stop.load(Ordering::Relaxed),
            "the pipeline thread was told to stop"
        );
    }

    #[test]
    fn a_shutdown_that_finishes_is_waited_for() {
        let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
        let stop = AtomicBool::new(false);
        let rt = runtime();
        // The pipeline thread: says it is done once it sees the stop flag.
        let r = rt.block_on(async {
            let pipeline = async {
                while !stop.load(Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
                done_tx.send(()).unwrap();
                std::future::pending::<()>().await;
            };
            let watchdog = Watchdog::default();
            let grace = Duration::from_secs(3600);
            tokio::select! {
                r = supervise(async {}, &stop, &mut done, &watchdog, grace) => r,
                _ = pipeline => unreachable!(),
            }
        });
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn an_overdue_librdkafka_call_stops_the_pipeline_without_a_shutdown() {
        let (_done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
        let stop = AtomicBool::new(false);
        let watchdog = Watchdog::new(Duration::ZERO);
        watchdog.enter(
            "send_offsets_to_transaction",
            Duration::ZERO,
            Instant::now() - Duration::from_secs(5),
        );
        let r = runtime().block_on(supervise(
            std::future::pending(),
            &stop,
            &mut done,
            &watchdog,
            SHUTDOWN_GRACE,
        ));
        match r {
            Err(PipelineError::Stuck { what, overdue_s }) => {
                assert_eq!(what, "send_offsets_to_transaction");
                assert!(overdue_s >= 5);
            }
            other => panic!("{other:?}"),
        }
    }
}
