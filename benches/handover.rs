//! Hand-over and failover of the consumer group, measured from outside on the real broker
//! (`scripts/bench-handover` starts a fresh one and runs `cargo bench --bench handover`).
//!
//! For each group mode — classic protocol with static membership, classic dynamic, KIP-848
//! (`consumer`) dynamic, KIP-848 static — two release binaries share a fresh topic set of four
//! partitions while a load runs: CLEAN background verdicts at `HANDOVER_RATE` per second and,
//! every 50 ms, a tripping burst of five for a fresh mailbox on each partition. Once both
//! instances own partitions and trips have been blocked for a few seconds, one instance gets
//! SIGTERM (a planned hand-over) or, in a second run on a fresh group, SIGKILL (failover).
//!
//! Two figures, both from the signal: until the survivor owns every partition (its
//! `mailguard_assigned_partitions`, polled every 50 ms: the group protocol's part), and **until
//! a read_committed reader has seen, on every input partition, a block for a trip sent after
//! the stopped process exited** (end to end) — all of the group's
//! input is processed again (a planned stop finishes its own last transaction first, so trips
//! sent before it exited may be its own). The baseline of the same run is the trip → block
//! latency (p50, max) with both instances up, before the signal.
//!
//! Sizes: `HANDOVER_RATE` (default 5000), `HANDOVER_WARMUP_SECS` (default 5),
//! `HANDOVER_MODES` (a comma list of `classic-static,classic-dynamic,consumer-dynamic,
//! consumer-static`; default all), `HANDOVER_RUST_LOG` (the instances' log filter, default
//! `warn`). Under `cargo test` (no `--bench`) it does nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use mailguard::codec::Codec;
use mailguard::config::{Config, GroupProtocol};
use mailguard::kafka::partitioner::partition_for;
use mailguard::policy::{Verdict, VerdictKind};

const PARTITIONS: i32 = 4;
const TRIP_EVERY: Duration = Duration::from_millis(50);
const GIVE_UP: Duration = Duration::from_secs(90);

#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    protocol: GroupProtocol,
    static_membership: bool,
}

const MODES: [Mode; 4] = [
    Mode {
        name: "classic-static",
        protocol: GroupProtocol::Classic,
        static_membership: true,
    },
    Mode {
        name: "classic-dynamic",
        protocol: GroupProtocol::Classic,
        static_membership: false,
    },
    Mode {
        name: "consumer-dynamic",
        protocol: GroupProtocol::Consumer,
        static_membership: false,
    },
    Mode {
        name: "consumer-static",
        protocol: GroupProtocol::Consumer,
        static_membership: true,
    },
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One instance's configuration on the run's topic set `id`, metrics on `port`.
fn config(bootstrap: &str, id: &str, mode: Mode, instance: &str, dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.kafka.bootstrap_servers = bootstrap.into();
    cfg.kafka.group_id = format!("{id}-group");
    cfg.kafka.transactional_id_prefix = format!("{id}-tx");
    cfg.kafka.instance_id = instance.into();
    cfg.kafka.group_protocol = mode.protocol;
    cfg.kafka.static_membership = mode.static_membership;
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
    t.partitions = PARTITIONS;
    cfg.state.dir = dir.join(format!("state-{instance}"));
    cfg.http.listen = format!("127.0.0.1:{}", free_port());
    cfg.log.filter = "warn".into();
    cfg
}

fn spawn(cfg: &Config, dir: &std::path::Path) -> Child {
    let path = dir.join(format!("{}.toml", cfg.kafka.instance_id));
    std::fs::write(&path, toml::to_string(cfg).unwrap()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_mailguard"))
        .args(["--config", path.to_str().unwrap(), "run"])
        .env(
            "RUST_LOG",
            std::env::var("HANDOVER_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// `mailguard_assigned_partitions` of the instance serving metrics on `listen`, if it answers.
fn assigned(listen: &str) -> Option<i64> {
    let mut s = std::net::TcpStream::connect(listen).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines().find_map(|l| {
        l.strip_prefix("mailguard_assigned_partitions ")?
            .parse()
            .ok()
    })
}

/// Waits until both instances own partitions and together all of them.
fn until_both_own_partitions(cfgs: &[Config; 2]) {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let a: Vec<Option<i64>> = cfgs.iter().map(|c| assigned(&c.http.listen)).collect();
        if a.iter().all(|n| n.unwrap_or(0) >= 1)
            && a.iter().map(|n| n.unwrap_or(0)).sum::<i64>() == PARTITIONS as i64
        {
            return;
        }
        assert!(Instant::now() < deadline, "the group did not settle: {a:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The load: CLEAN verdicts at `rate` per second and, every [`TRIP_EVERY`], a burst of five
/// offending verdicts of a fresh mailbox on each partition. `sent` maps each tripping mailbox
/// to (partition, epoch ms when its burst was handed to the producer).
struct Load {
    sent: Arc<Mutex<HashMap<String, (i32, i64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(bootstrap: &str, topic: &str, rate: f64) -> Load {
        let sent = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, topic) = (sent.clone(), stop.clone(), topic.to_string());
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "1")
            .create()
            .unwrap();
        let thread = std::thread::spawn(move || {
            let codec = Codec::default();
            let (start, mut clean, mut tick) = (Instant::now(), 0u64, 0u64);
            let mut fresh = (0u64..).map(|i| format!("trip{i}@handover.example"));
            while !st.load(Ordering::Relaxed) {
                // At most 100 ms of background per turn, so that the trips keep their pace and
                // a stop is seen; a generator that falls behind (a loaded machine) skips ahead.
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                clean = clean.max(due.saturating_sub((rate / 10.0) as u64));
                while clean < due {
                    let mb = format!("clean{}@handover.example", clean % 10_000);
                    send(&p, &codec, &topic, &mb, VerdictKind::Clean);
                    clean += 1;
                }
                if start.elapsed() >= TRIP_EVERY * tick as u32 {
                    for want in 0..PARTITIONS {
                        let mb = fresh
                            .by_ref()
                            .find(|m| partition_for(m.as_bytes(), PARTITIONS) == want)
                            .unwrap();
                        for _ in 0..5 {
                            send(&p, &codec, &topic, &mb, VerdictKind::Spam);
                        }
                        s.lock().unwrap().insert(mb, (want, now_ms()));
                    }
                    tick += 1;
                }
                p.poll(Duration::from_millis(1));
            }
            let _ = p.flush(Duration::from_secs(10));
        });
        Load {
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().unwrap().join();
    }
}

fn send(p: &BaseProducer, codec: &Codec, topic: &str, mailbox: &str, kind: VerdictKind) {
    let v = Verdict {
        message_id: format!("{}", rand::random::<u64>()),
        tenant_id: "handover".into(),
        mailbox: mailbox.into(),
        sent_at: now_ms(),
        verdict: kind,
    };
    let mut buf = Vec::new();
    codec.encode_verdict(&v, &mut buf).unwrap();
    let rec = BaseRecord::<str, [u8]>::to(topic)
        .key(mailbox)
        .payload(buf.as_slice());
    // A full queue (the broker is behind) drops the record: load, not data the bench checks.
    let _ = p.send(rec).map_err(|_| p.poll(Duration::from_millis(1)));
}

/// A read_committed reader of the blocks topic from its start.
fn blocks_reader(bootstrap: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("handover-reader-{}", rand::random::<u32>()),
        )
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// The next block's mailbox and when the reader saw it (epoch ms).
fn next_block(c: &BaseConsumer) -> Option<(String, i64)> {
    match c.poll(Duration::from_millis(10))? {
        Ok(m) => Some((String::from_utf8_lossy(m.key()?).into_owned(), now_ms())),
        Err(_) => None,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("handover bench: run with `scripts/bench-handover` (needs a local broker)");
        return;
    }
    let bootstrap = std::env::var("MAILGUARD_BENCH_BOOTSTRAP")
        .expect("MAILGUARD_BENCH_BOOTSTRAP (scripts/bench-handover sets it)");
    let rate = env_u64("HANDOVER_RATE", 5_000) as f64;
    let warmup = Duration::from_secs(env_u64("HANDOVER_WARMUP_SECS", 5));
    let wanted = std::env::var("HANDOVER_MODES").unwrap_or_default();
    println!(
        "machine: {} cores; load: {rate:.0} CLEAN verdicts/s + a trip per partition every {} ms, {PARTITIONS} partitions, two instances",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        TRIP_EVERY.as_millis()
    );
    println!("figures, from the signal: the survivor owns every partition; every partition has blocked (read_committed) a trip sent after the stopped process exited");
    let mut table = BTreeMap::new();
    for mode in MODES
        .iter()
        .filter(|m| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == m.name))
    {
        for (signal, label) in [("TERM", "planned (SIGTERM)"), ("KILL", "kill -9")] {
            let r = measure(&bootstrap, *mode, signal, rate, warmup);
            let f = |s: Option<f64>| s.map_or("> 90 s".into(), |s| format!("{s:.2} s"));
            println!(
                "{:<17} {:<17}: survivor owns all partitions {}, all partitions block again {}   (baseline before the signal: trip → block p50 {:.0} ms, max {:.0} ms, {} trips)",
                mode.name,
                label,
                f(r.owned),
                f(r.seconds),
                r.p50_ms,
                r.max_ms,
                r.trips
            );
            table.insert((mode.name, signal), (r.owned, r.seconds));
        }
    }
    println!("summary, seconds from the signal: owned by the survivor / blocking again (goal: planned ≤ 2, kill -9 ≤ 10):");
    let f = |v: Option<f64>| v.map_or(">90".to_string(), |v| format!("{v:.2}"));
    for mode in MODES {
        let cell = |s: &str| {
            table
                .get(&(mode.name, s))
                .map_or("-".to_string(), |(o, b)| format!("{} / {}", f(*o), f(*b)))
        };
        println!(
            "  {:<17} planned {:>13}   kill -9 {:>13}",
            mode.name,
            cell("TERM"),
            cell("KILL")
        );
    }
}

/// What one hand-over measured.
struct Outcome {
    /// Signal → the survivor owns every partition (its `mailguard_assigned_partitions`).
    owned: Option<f64>,
    /// Signal → every partition processed again; `None`: not within [`GIVE_UP`].
    seconds: Option<f64>,
    /// Trip → block with both instances up (the baseline of the same run).
    p50_ms: f64,
    max_ms: f64,
    trips: usize,
}

/// Two instances in `mode` under the load; `signal` to one of them; the hand-over.
fn measure(bootstrap: &str, mode: Mode, signal: &str, rate: f64, warmup: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let id = format!("ho{:08x}", rand::random::<u32>());
    let cfgs = ["a", "b"].map(|i| config(bootstrap, &id, mode, i, dir.path()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mailguard::kafka::admin::ensure_topics(&cfgs[0]))
        .unwrap();
    let mut children = cfgs.clone().map(|c| spawn(&c, dir.path()));
    until_both_own_partitions(&cfgs);
    let load = Load::start(bootstrap, &cfgs[0].topics.verdicts, rate);
    let reader = blocks_reader(bootstrap, &cfgs[0].topics.blocks);
    let mut seen: Vec<(String, i64)> = Vec::new();
    let warm_until = Instant::now() + warmup;
    while Instant::now() < warm_until {
        seen.extend(next_block(&reader));
    }
    let mut before: Vec<f64> = {
        let sent = load.sent.lock().unwrap();
        seen.iter()
            .filter_map(|(mb, at)| Some((at - sent.get(mb)?.1) as f64))
            .collect()
    };
    before.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "{} {signal}: group settled, {} trips blocked in the warm-up; signalling",
        mode.name,
        before.len()
    );
    let signalled = now_ms();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &children[0].id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
    let survivor = cfgs[1].http.listen.clone();
    let (owned, seconds) =
        until_every_partition_again(&reader, &load, &mut children[0], &survivor, signalled);
    load.finish();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Outcome {
        owned,
        seconds,
        p50_ms: before.get(before.len() / 2).copied().unwrap_or(f64::NAN),
        max_ms: before.last().copied().unwrap_or(f64::NAN),
        trips: before.len(),
    }
}

/// Seconds from `signalled` until the survivor (metrics on `survivor`) owned every partition,
/// and until a block was seen on every partition for a trip sent after `stopped` exited.
fn until_every_partition_again(
    reader: &BaseConsumer,
    load: &Load,
    stopped: &mut Child,
    survivor: &str,
    signalled: i64,
) -> (Option<f64>, Option<f64>) {
    let secs = |at: i64| Some((at - signalled) as f64 / 1000.0);
    let (mut exited, mut owned) = (None::<i64>, None);
    let mut pending: Vec<(String, i64)> = Vec::new();
    let mut first: HashMap<i32, i64> = HashMap::new();
    let mut next_look = Instant::now();
    while now_ms() - signalled < GIVE_UP.as_millis() as i64 {
        if exited.is_none() && stopped.try_wait().unwrap().is_some() {
            exited = Some(now_ms());
        }
        if owned.is_none() && Instant::now() >= next_look {
            next_look = Instant::now() + Duration::from_millis(50);
            if assigned(survivor) == Some(PARTITIONS as i64) {
                owned = secs(now_ms());
            }
        }
        pending.extend(next_block(reader));
        let Some(exit) = exited else { continue };
        let sent = load.sent.lock().unwrap();
        for (mb, at) in pending.drain(..) {
            if let Some(&(p, sent_at)) = sent.get(&mb) {
                if sent_at >= exit {
                    first.entry(p).or_insert(at);
                }
            }
        }
        if first.len() == PARTITIONS as usize && owned.is_some() {
            return (owned, secs(*first.values().max().unwrap()));
        }
    }
    (owned, None)
}
