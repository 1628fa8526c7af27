//! The view's reader thread: plain `assign()` consumers (`read_committed`, never committing,
//! group ids from [`client::reader_group`]) of mailguard's own topics, from the beginning. It
//! sees exactly what the pipeline committed, a few milliseconds after the commit; rebalances of
//! the pipeline's group do not touch it.
//!
//! Records are checked as the pipeline checks them (tenant settings through the tables' own
//! [`tables::checked`]); one whose writer schema the registry cannot serve right now is retried,
//! never skipped, so a registry outage makes the view stale (and the API say so), not wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{ClientContext, Message, Statistics};
use tracing::{info, warn};

use super::freshness::{self, Freshness, Report};
use super::{SharedView, Update};
use crate::codec::{Codec, CodecError};
use crate::config::Config;
use crate::kafka::reader::{Read, Start, TopicReader};
use crate::kafka::{client, KafkaError};
use crate::pipeline::tables::{self, TableRecord};
use crate::policy::{Limits, MailboxState, Millis};
use crate::store::Table;
use crate::telemetry::Metrics;
use crate::timers::Clock;

/// Handle of the running view reader.
pub struct ViewReader {
    /// The thread; ends when `stop` is set.
    pub thread: std::thread::JoinHandle<()>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Changelog,
    Blocks,
    Events,
    Alerts,
    Commands,
    Tenants,
}

/// A reader's context: end of partition is no error, and the latest statistics report is kept
/// for [`freshness`].
#[derive(Default)]
struct ViewContext {
    stats: Mutex<Option<(Instant, Statistics)>>,
}

impl ClientContext for ViewContext {
    fn stats(&self, statistics: Statistics) {
        *self.stats.lock().expect("stats lock") = Some((Instant::now(), statistics));
    }

    fn error(&self, error: RdError, reason: &str) {
        client::ReaderContext.error(error, reason);
    }
}

impl ConsumerContext for ViewContext {}

struct Reader {
    source: Source,
    reader: TopicReader<ViewContext>,
    freshness: Freshness,
}

/// How often events and alerts past the retention are deleted (processor time).
const EXPIRY_INTERVAL_MS: Millis = 10_000;
/// Most entries one expiry round deletes (a round then follows at once).
const EXPIRY_BUDGET: usize = 10_000;

/// Prefetch bound of each of the view's consumers (`queued.max.messages.kbytes`, per partition
/// as the readers assign partitions), and of one fetch response (`fetch.max.bytes`).
const QUEUED_KBYTES: &str = "2048";
const FETCH_MAX_BYTES: &str = "4194304";

/// librdkafka's statistics interval of the view's readers: how often a freshness target is set.
const STATS_INTERVAL_MS: &str = "1000";

/// Start reading every partition of the view's topics from the beginning. One consumer per
/// topic, because librdkafka's end-of-partition event names the partition but not the topic.
pub fn spawn(
    cfg: &Config,
    codec: Codec,
    view: SharedView,
    stop: Arc<AtomicBool>,
    (metrics, clock): (Metrics, Arc<dyn Clock>),
) -> Result<ViewReader, KafkaError> {
    let t = &cfg.topics;
    let mut readers = Vec::new();
    for (topic, source, purpose) in [
        (&t.changelog, Source::Changelog, "api-view-changelog"),
        (&t.blocks, Source::Blocks, "api-view-blocks"),
        (&t.events, Source::Events, "api-view-events"),
        (&t.alerts, Source::Alerts, "api-view-alerts"),
        (&t.commands, Source::Commands, "api-view-commands"),
        (&t.tenants, Source::Tenants, "api-view-tenants"),
    ] {
        let mut reader = TopicReader::with_context(
            &cfg.kafka,
            purpose,
            topic,
            "the admin API's view reads it (api.enabled)",
            ViewContext::default(),
            |c| {
                c.set("statistics.interval.ms", STATS_INTERVAL_MS);
                // librdkafka prefetches up to 64 MiB and 100 000 records per partition by default
                // and a fetch answer may be 50 MiB: six readers of four partitions would make it
                // most of the view's memory. These keep a loaded broker's fetches full.
                c.set("queued.max.messages.kbytes", QUEUED_KBYTES);
                c.set("queued.min.messages", "10000");
                c.set("fetch.max.bytes", FETCH_MAX_BYTES);
            },
        )?;
        reader.assign_all(|_| Ok::<_, KafkaError>(Start::Beginning))?;
        readers.push(Reader {
            source,
            reader,
            freshness: Freshness::default(),
        });
    }
    let limits = cfg.limits.clone();
    let thread = std::thread::Builder::new()
        .name("mailguard-api-view".into())
        .spawn(move || run(readers, (codec, limits), view, stop, (metrics, clock)))
        .expect("spawn view thread");
    Ok(ViewReader { thread })
}

fn run(
    mut readers: Vec<Reader>,
    (codec, limits): (Codec, Limits),
    view: SharedView,
    stop: Arc<AtomicBool>,
    (metrics, clock): (Metrics, Arc<dyn Clock>),
) {
    let mut updates = Vec::with_capacity(1024);
    let mut caught_up = false;
    let mut next_expiry = Millis::MIN;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for r in readers.iter_mut() {
            poll_reader(r, &codec, &limits, &stop, &mut updates);
            let stats = r
                .reader
                .consumer()
                .context()
                .stats
                .lock()
                .expect("stats lock")
                .take();
            if let Some((at, stats)) = stats {
                r.freshness.on_report(at, report(&stats, r.reader.topic()));
            }
            r.freshness.settle();
        }
        if updates.is_empty() {
            // Idle. librdkafka cannot wait on five consumers at once (short of forwarding their
            // queues), so the loop naps: 5 ms bounds what this adds to the view's staleness, at
            // 200 cheap wake-ups a second.
            std::thread::sleep(Duration::from_millis(5));
        }
        let fresh_at = freshness::staleness(
            Instant::now(),
            readers.iter().map(|r| r.freshness.fresh_at()),
        )
        .and_then(|age| Instant::now().checked_sub(age));
        metrics.set_api_view(
            readers.iter().map(|r| r.freshness.lag()).sum(),
            fresh_at.unwrap_or(started).elapsed(),
        );
        if !caught_up && readers.iter().all(|r| r.reader.loaded()) {
            caught_up = true;
            info!("api view caught up");
        }
        // On disk first, then the small part in memory under one short lock.
        let failed = view.apply(std::mem::take(&mut updates)).err();
        if let Some(e) = &failed {
            tracing::error!(error = %e, "api view: local store write failed; the API answers 503 until a restart rebuilds the view");
        }
        let now = clock.now_ms();
        if now >= next_expiry {
            next_expiry = now + EXPIRY_INTERVAL_MS;
            match view.expire(now.saturating_sub(view.retention_ms), EXPIRY_BUDGET) {
                // More than a budget is due: the next round comes at once.
                Ok(n) if n == EXPIRY_BUDGET => next_expiry = now,
                Ok(_) => {}
                Err(e) => warn!(error = %e, "api view: expiry failed"),
            }
        }
        let mut v = view.data.write().expect("view lock");
        v.caught_up = caught_up;
        v.fresh_at = fresh_at;
        v.store_failed |= failed.is_some();
    }
}

/// What a statistics report says of the reader's topic: each assigned partition's end, and
/// whether every one has a leader it is fetching from.
fn report(stats: &Statistics, topic: &str) -> Report {
    let mut r = Report {
        healthy: true,
        ..Report::default()
    };
    let Some(t) = stats.topics.get(topic) else {
        r.healthy = false;
        return r;
    };
    for p in t
        .partitions
        .values()
        .filter(|p| p.partition >= 0 && p.desired)
    {
        let end = if p.ls_offset >= 0 {
            p.ls_offset
        } else {
            p.hi_offset
        };
        if p.leader < 0 || p.fetch_state != "active" || end < 0 {
            r.healthy = false;
        }
        r.ends.insert(p.partition, end);
    }
    r
}

/// Take what one reader has fetched (at most 1024 records).
fn poll_reader(
    r: &mut Reader,
    codec: &Codec,
    limits: &Limits,
    stop: &AtomicBool,
    updates: &mut Vec<Update>,
) {
    for _ in 0..1024 {
        let msg = match r.reader.poll(Duration::ZERO) {
            Ok(None) => return,
            Ok(Some(Read::End(p))) => {
                r.freshness.on_end(p);
                continue;
            }
            // A revoked ACL included: the view then goes stale and the API says so (503); the
            // preflight names the ACL at the next start.
            Err(e) => {
                warn!(topic = %r.reader.topic(), error = %e, "api view consumer error");
                return;
            }
            Ok(Some(Read::Record(m))) => m,
        };
        r.freshness.on_record(msg.partition(), msg.offset());
        let at = msg.timestamp().to_millis().unwrap_or_default();
        let key = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned);
        let decoded = retry_transient(
            || decode(r.source, codec, limits, key.clone(), (msg.payload(), at)),
            stop,
            |e, wait| {
                warn!(topic = %msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "api view: writer schema unavailable; retrying");
                std::thread::sleep(wait);
            },
        );
        // Stopping while the registry is away: the view is dropped anyway.
        let Some(decoded) = decoded else { return };
        match decoded {
            Ok(Some(u)) => updates.push(u),
            Ok(None) => {}
            // The pipeline dead-letters what it cannot read or accept; the view only skips it.
            Err(e) => {
                warn!(topic = %msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "api view: record skipped")
            }
        }
    }
}

/// `attempt`, again after `wait` (200 ms doubling to 5 s) for as long as it fails for a reason
/// that may go away (the registry cannot serve a writer schema right now) and `stop` is not set.
/// Skipping such a record would leave the view wrong for good while it looks healthy; waiting
/// leaves it stale, which the API reports. `None` when stopped.
fn retry_transient<T>(
    mut attempt: impl FnMut() -> Result<T, Skip>,
    stop: &AtomicBool,
    mut wait: impl FnMut(&CodecError, Duration),
) -> Option<Result<T, Skip>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match attempt() {
            Err(Skip::Codec(e)) if e.is_transient() => {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                wait(&e, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return Some(other),
        }
    }
}

/// Why a record does not change the view.
#[derive(Debug, thiserror::Error)]
enum Skip {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("mailbox state: {0}")]
    State(String),
    #[error("tenant settings: {0}")]
    Tenant(String),
}

fn decode(
    source: Source,
    codec: &Codec,
    limits: &Limits,
    key: Option<String>,
    (payload, at): (Option<&[u8]>, Millis),
) -> Result<Option<Update>, Skip> {
    Ok(match (source, payload) {
        (Source::Changelog, None) => key.map(|k| Update::State(k, None)),
        (Source::Changelog, Some(b)) => {
            let s = MailboxState::decode(b).map_err(|e| Skip::State(e.to_string()))?;
            Some(Update::State(key.unwrap_or_default(), Some(s)))
        }
        (Source::Tenants, None) => key.map(|k| Update::Tenant(Table::Tenants.id_of_key(&k), None)),
        (Source::Tenants, Some(b)) => {
            let Some(key) = key else {
                return Err(Skip::Tenant("missing or non-UTF-8 key".into()));
            };
            let key = Table::Tenants.id_of_key(&key);
            let (id, t) = codec.decode_tenant(b)?;
            match tables::checked(TableRecord::Tenant(id, t), &key, limits) {
                Ok(TableRecord::Tenant(_, t)) => Some(Update::Tenant(key, Some(t))),
                Ok(_) => None,
                Err(refusal) => return Err(Skip::Tenant(refusal.reason)),
            }
        }
        (Source::Commands, Some(b)) => Some(Update::Command(codec.decode_command(b)?)),
        (Source::Blocks | Source::Events | Source::Alerts, Some(b)) => {
            Some(Update::Effect(codec.decode_effect(b)?, at))
        }
        (_, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Skip {
        Skip::Codec(CodecError::SchemaSource {
            id: 7,
            message: "registry unreachable".into(),
            transient: true,
        })
    }

    #[test]
    fn a_registry_outage_is_waited_out_never_skipped() {
        let stop = AtomicBool::new(false);
        let mut attempts = 0;
        let mut waits = Vec::new();
        let got = retry_transient(
            || {
                attempts += 1;
                if attempts < 4 {
                    Err(unavailable())
                } else {
                    Ok("decoded")
                }
            },
            &stop,
            |_, w| waits.push(w.as_millis()),
        );
        assert_eq!(got.unwrap().unwrap(), "decoded");
        assert_eq!(waits, [200, 400, 800]);
        // A record that can never be read is not retried.
        let mut attempts = 0;
        let got: Option<Result<(), Skip>> = retry_transient(
            || {
                attempts += 1;
                Err(Skip::Tenant("key does not match".into()))
            },
            &stop,
            |_, _| panic!("no wait"),
        );
        assert!(matches!(got, Some(Err(Skip::Tenant(_)))) && attempts == 1);
        // Stopping ends the wait.
        stop.store(true, Ordering::Relaxed);
        assert!(retry_transient(|| Err::<(), _>(unavailable()), &stop, |_, _| {}).is_none());
    }
}
