//! The API's view at scale, against the real local broker (`scripts/bench-view` starts one and
//! runs `cargo bench --bench view`).
//!
//! 1. A child process writes what the pipeline would have written over 30 days: the states of
//!    `VIEW_MAILBOXES` mailboxes (default 1 M; one in ten tripped, by the policy core itself) to
//!    the changelog, the trips' blocks, alerts and events, and more events up to `VIEW_EVENTS`
//!    (default 1 M) spread over the 30 days across ten tenants (half of them in one tenant).
//! 2. This process starts the view (`Api::start`, in-process: the figures are the view's alone,
//!    not the pipeline's) and times it from empty to caught up; resident memory after it.
//! 3. `VIEW_CLIENTS` (default 100) concurrent HTTP clients query the events report of the big
//!    tenant for `VIEW_QUERY_SECS` (default 20 s): newest page, a page deep in the month by
//!    cursor, one day of one kind, one mailbox's events, the incidents list. Latency per request
//!    (p50, p99, max) and requests per second; resident memory at the end.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use mailguard::codec::Codec;
use mailguard::config::{ApiRole, ApiToken, Config};
use mailguard::policy::{
    self, Effect, EventKind, EventLogEntry, Input, MailboxState, Policy, Verdict, VerdictKind,
};
use mailguard::timers::SystemClock;

#[allow(dead_code)]
#[path = "../tests/common/builders.rs"]
mod builders;
use builders::NoDirectory;

const PARTITIONS: i32 = 4;
const DAY: i64 = 86_400_000;
const TOKEN: &str = "view-bench-token";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tenant(i: usize) -> String {
    // Half of everything in one tenant, the rest in nine.
    if i.is_multiple_of(2) {
        "big".into()
    } else {
        format!("t{}", i % 9)
    }
}

fn config(bootstrap: &str, id: &str, dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = bootstrap.into();
    cfg.kafka.group_id = format!("{id}-group");
    cfg.kafka.transactional_id_prefix = format!("{id}-tx");
    let t = &mut cfg.topics;
    for (field, name) in [
        (&mut t.verdicts, "verdicts"),
        (&mut t.mailboxes, "mailboxes"),
        (&mut t.devices, "devices"),
        (&mut t.tenants, "tenants"),
        (&mut t.commands, "commands"),
        (&mut t.blocks, "blocks"),
        (&mut t.scan_requests, "scans"),
        (&mut t.alerts, "alerts"),
        (&mut t.events, "events"),
        (&mut t.dlq, "dlq"),
        (&mut t.changelog, "changelog"),
        (&mut t.exemptions, "exemptions"),
        (&mut t.scan_results, "scan-results"),
        (&mut t.scan_results_routed, "scan-results-routed"),
    ] {
        *field = format!("{id}.{name}");
    }
    cfg.topics.partitions = PARTITIONS;
    cfg.topics.create_missing = true;
    cfg.state.dir = dir.join("state");
    cfg.api.enabled = true;
    cfg.api.tokens = vec![ApiToken {
        sha256: mailguard::api::auth::hash_token(TOKEN),
        principal: "bench".into(),
        role: ApiRole::Support,
        tenant: None,
    }];
    cfg.log.filter = "warn".into();
    cfg
}

struct Sender {
    p: BaseProducer,
    n: usize,
}

impl Sender {
    fn new(bootstrap: &str) -> Sender {
        let p = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        Sender { p, n: 0 }
    }

    fn send(&mut self, topic: &str, key: &str, value: &[u8]) {
        let mut rec = BaseRecord::<str, [u8]>::to(topic).key(key).payload(value);
        loop {
            match self.p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    self.p.poll(Duration::from_millis(5));
                }
            }
        }
        self.n += 1;
    }

    fn effect(&mut self, cfg: &Config, codec: &Codec, e: &Effect, buf: &mut Vec<u8>) {
        let (topic, key) = match e {
            Effect::Block(b) => (&cfg.topics.blocks, b.mailbox.as_str()),
            Effect::Alert(a) => (&cfg.topics.alerts, a.tenant_id.as_str()),
            Effect::Event(ev) => (&cfg.topics.events, ev.mailbox.as_str()),
            Effect::Scan(_) | Effect::Exemption(_) => return,
        };
        codec.encode_effect(e, buf).unwrap();
        self.send(topic, key, buf);
    }
}

/// Phase 1, in a child process so that its memory is not the view's.
fn produce(cfg: &Config, mailboxes: usize, events: usize) {
    let bootstrap = &cfg.kafka.bootstrap_servers;
    let codec = Codec::default();
    let policy = Policy::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let t_end = now_ms() - 60_000;
    let t0 = t_end - 30 * DAY;
    let mut s = Sender::new(bootstrap);
    let mut buf = Vec::new();
    let mut written_events = 0;
    for i in 0..mailboxes {
        let mailbox = format!("user{i}@{}.test", tenant(i));
        let at = rng.random_range(t0..t_end);
        let offending = if i % 10 == 0 { 5 } else { 1 };
        let mut state = MailboxState::default();
        for k in 0..offending {
            let v = Verdict {
                message_id: format!("m{i}-{k}"),
                tenant_id: tenant(i),
                mailbox: mailbox.clone(),
                sent_at: at + k,
                verdict: VerdictKind::Spam,
            };
            let r = policy::step(
                &mut state,
                &Input::Verdict(v),
                at + k,
                &NoDirectory,
                &policy,
            );
            for e in &r.effects {
                if matches!(e, Effect::Event(_)) {
                    written_events += 1;
                }
                s.effect(cfg, &codec, e, &mut buf);
            }
        }
        s.send(&cfg.topics.changelog, &mailbox, &state.to_bytes());
    }
    let kinds = [
        EventKind::MailboxWarned,
        EventKind::ScanCompleted,
        EventKind::MailboxUnblocked,
        EventKind::AlertSent,
    ];
    for n in written_events..events {
        let i = rng.random_range(0..mailboxes);
        let e = EventLogEntry {
            event_id: format!("bench-{n}"),
            incident_id: None,
            tenant_id: tenant(i),
            mailbox: format!("user{i}@{}.test", tenant(i)),
            kind: kinds[n % kinds.len()],
            at: rng.random_range(t0..t_end),
            detail: format!("bench event {n}"),
            reason: None,
            trip: None,
        };
        s.effect(cfg, &codec, &Effect::Event(e), &mut buf);
    }
    s.p.flush(Duration::from_secs(300)).unwrap();
    eprintln!(
        "view bench: wrote {} records ({mailboxes} states, {events} events)",
        s.n
    );
}

fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// The queries of phase 3: (label, path).
fn queries(t_end: i64, cursors: &[String], rng: &mut impl Rng) -> (usize, String) {
    let base = "/v1/tenants/big";
    match rng.random_range(0..5) {
        0 => (0, format!("{base}/events?limit=100")),
        1 => {
            let c = &cursors[rng.random_range(0..cursors.len())];
            (1, format!("{base}/events?limit=100&cursor={c}"))
        }
        2 => {
            let day = rng.random_range(1..30);
            let to = t_end - day * DAY;
            (
                2,
                format!(
                    "{base}/events?limit=100&kind=MAILBOX_WARNED&from={}&to={to}",
                    to - DAY
                ),
            )
        }
        3 => {
            let i = rng.random_range(0..1000) * 2;
            (
                3,
                format!("{base}/events?limit=100&mailbox=user{i}%40big.test"),
            )
        }
        _ => (4, format!("{base}/incidents?limit=100")),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let bootstrap = std::env::var("MAILGUARD_BENCH_BOOTSTRAP")
        .expect("MAILGUARD_BENCH_BOOTSTRAP (scripts/bench-view)");
    let mailboxes = env_usize("VIEW_MAILBOXES", 1_000_000);
    let events = env_usize("VIEW_EVENTS", 1_000_000);
    if let Ok(id) = std::env::var("VIEW_BENCH_PRODUCE") {
        let dir = std::path::PathBuf::from(std::env::var("VIEW_BENCH_DIR").unwrap());
        produce(&config(&bootstrap, &id, &dir), mailboxes, events);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = format!("viewbench-{}", now_ms());
    let cfg = config(&bootstrap, &id, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mailguard::kafka::admin::ensure_topics(&cfg))
        .unwrap();
    let t = Instant::now();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env("VIEW_BENCH_PRODUCE", &id)
        .env("VIEW_BENCH_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    eprintln!("view bench: produced in {:.1} s", t.elapsed().as_secs_f64());

    // Phase 2: the view from empty to caught up.
    let (rss_before, _) = rss_mib();
    let metrics = mailguard::telemetry::Metrics::new();
    let t = Instant::now();
    let api = mailguard::api::Api::start(&cfg, metrics, Arc::new(SystemClock)).unwrap();
    while !api.caught_up() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let build = t.elapsed().as_secs_f64();
    let t_start = t;
    let (rss_built, hwm_built) = rss_mib();

    // Phase 3: HTTP clients against the router on a loopback port.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router();
    rt.spawn(async move { axum::serve(listener, router).await });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| -> (u16, serde_json::Value) {
        let mut r = agent
            .get(format!("http://{addr}{path}"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or_default())
    };
    // Caught up, the view answers once it has also reached a statistics report made after the
    // catch-up (a second or two: freshness moves report by report).
    let first = Instant::now();
    while get("/v1/tenants/big/events?limit=1").0 != 200 {
        assert!(
            first.elapsed() < Duration::from_secs(60),
            "the view does not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answering = t_start.elapsed().as_secs_f64();
    // What a client of the bench does per request: the answer read whole, not parsed (parsing
    // would be the client's cost on the same two cores).
    let fetch = |path: &str| -> u16 {
        match agent
            .get(format!("http://{addr}{path}"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
        {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let _ = r.body_mut().read_to_vec();
                status
            }
            Err(_) => 0,
        }
    };
    // Cursors deep in the month: follow 50 pages of 1 000, keep each page's cursor.
    let mut cursors = Vec::new();
    let mut path = "/v1/tenants/big/events?limit=1000".to_owned();
    for _ in 0..50 {
        let (status, v) = get(&path);
        assert_eq!(status, 200, "{path}: {v}");
        let Some(c) = v["next_cursor"].as_str() else {
            break;
        };
        cursors.push(c.to_owned());
        path = format!("/v1/tenants/big/events?limit=1000&cursor={c}");
    }
    let clients = env_usize("VIEW_CLIENTS", 100);
    let secs = env_usize("VIEW_QUERY_SECS", 20) as u64;
    println!("view bench: {mailboxes} mailboxes with state, {events} events over 30 days");
    println!(
        "  build from empty to caught up: {build:.1} s; answering (fresh) after {answering:.1} s"
    );
    println!("  RSS before the view {rss_before:.0} MiB; caught up {rss_built:.0} MiB (peak {hwm_built:.0})");
    // Closed loop (each client sends its next query as soon as the last is answered: the
    // machine's capacity), then each client paced to one query per VIEW_PACE_MS (default 200).
    for pace in [0, env_usize("VIEW_PACE_MS", 200) as u64] {
        let t_end = now_ms();
        let stop = AtomicBool::new(false);
        let lat: Mutex<Vec<Vec<Duration>>> = Mutex::new(vec![Vec::new(); 5]);
        let errors = std::sync::atomic::AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|s| {
            for c in 0..clients {
                let (stop, lat, errors, cursors, fetch) = (&stop, &lat, &errors, &cursors, &fetch);
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
                    let mut mine: Vec<Vec<Duration>> = vec![Vec::new(); 5];
                    let mut next =
                        Instant::now() + Duration::from_millis(rng.random_range(0..=pace));
                    while !stop.load(Ordering::Relaxed) {
                        if pace > 0 {
                            std::thread::sleep(next.saturating_duration_since(Instant::now()));
                            next += Duration::from_millis(pace);
                        }
                        let (kind, path) = queries(t_end, cursors, &mut rng);
                        let t = Instant::now();
                        let status = fetch(&path);
                        mine[kind].push(t.elapsed());
                        if status != 200 {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let mut all = lat.lock().unwrap();
                    for (k, v) in mine.into_iter().enumerate() {
                        all[k].extend(v);
                    }
                });
            }
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::Relaxed);
        });
        let elapsed = started.elapsed().as_secs_f64();
        let (rss_end, hwm_end) = rss_mib();
        let names = [
            "newest page",
            "page deep in the month (cursor)",
            "one day, one kind",
            "one mailbox",
            "incidents list",
        ];
        let lat = lat.lock().unwrap();
        let mode = if pace == 0 {
            "closed loop".to_owned()
        } else {
            format!("each client one query per {pace} ms")
        };
        println!("  {clients} concurrent clients, {mode}:");
        let mut all: Vec<Duration> = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let mut v = lat[k].clone();
            v.sort();
            println!(
                "    {name:<34} n={:>7}  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
                v.len(),
                percentile(&v, 0.5),
                percentile(&v, 0.99),
                percentile(&v, 1.0)
            );
            all.extend(v);
        }
        all.sort();
        println!(
            "    all: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, non-200 {}; RSS after {rss_end:.0} MiB (peak {hwm_end:.0})",
            all.len() as f64 / elapsed,
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 1.0),
            errors.load(Ordering::Relaxed)
        );
    }
    api.stop();
}
