//! Bench of `mailguard backtest` (harness = false; `cargo bench --bench backtest`). One thread
//! throughout, so every figure is per core.
//!
//! 1. From a file with two policies (the live one and a stricter candidate with a tenant
//!    override): an Avro object container file with null blocks, the same with deflate blocks,
//!    and JSON lines; beside them the container decode alone and the core alone (verdicts
//!    already in memory), so where the time goes is visible.
//! 2. From the topic (when `MAILGUARD_BENCH_BOOTSTRAP` or `MAILGUARD_TEST_BOOTSTRAP` names a
//!    broker): the backtest over a fresh verdicts topic against a raw read_committed consumer
//!    reading the same topic to its end, as `benches/e2e.rs` measures the pipeline.
//!
//! The stream: `BT_VERDICTS` verdicts (default 5 M) over `BT_MAILBOXES` mailboxes (200 000), one
//! second of event time per 2 000 verdicts; 1 % of the mailboxes compromised, bursting spam;
//! otherwise CLEAN with 0.5 % noise (the e2e bench's mix). `BT_TOPIC_VERDICTS` (default 2 M)
//! for the topic. Under `cargo test` (no `--bench` argument) it does nothing.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use mailguard::backtest::decode::OcfReader;
use mailguard::backtest::input::{self, Range};
use mailguard::backtest::{Backtest, BacktestArgs, PolicySet, TenantOverrides};
use mailguard::codec::{Codec, RecordType, VerdictRef};
use mailguard::config::Config;
use mailguard::policy::{Limits, Policy, Verdict, VerdictKind};

const PARTITIONS: i32 = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The stream, one verdict at a time, in time order.
fn stream(n: usize, mailboxes: usize, seed: u64, mut f: impl FnMut(&Verdict)) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let compromised = (mailboxes / 100).max(1);
    let t0 = 1_764_547_200_000i64;
    let names: Vec<String> = (0..mailboxes)
        .map(|i| format!("user{i}@tenant{}.example.com", i % 50))
        .collect();
    let mut v = Verdict {
        message_id: String::new(),
        tenant_id: String::new(),
        mailbox: String::new(),
        sent_at: 0,
        verdict: VerdictKind::Clean,
    };
    for i in 0..n {
        let burst = rng.random_range(0..100) < 2;
        let m = if burst {
            rng.random_range(0..compromised)
        } else {
            rng.random_range(0..mailboxes)
        };
        v.verdict = if burst || rng.random_range(0..1000) < 5 {
            VerdictKind::Spam
        } else {
            VerdictKind::Clean
        };
        v.message_id.clear();
        let _ = write!(v.message_id, "{i:x}-gw7");
        v.mailbox.clone_from(&names[m]);
        v.tenant_id.clear();
        let _ = write!(v.tenant_id, "tenant{}", m % 50);
        v.sent_at = t0 + (i / 2) as i64;
        f(&v);
    }
}

struct Ocf<W: Write> {
    out: W,
    block: Vec<u8>,
    count: i64,
    deflate: bool,
}

const SYNC: [u8; 16] = *b"mailguard-bench!";

fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

impl<W: Write> Ocf<W> {
    fn new(mut out: W, deflate: bool) -> Self {
        let mut h = b"Obj\x01".to_vec();
        zigzag(&mut h, 2);
        for (k, v) in [
            ("avro.schema", RecordType::OutboundVerdict.schema_json()),
            ("avro.codec", if deflate { "deflate" } else { "null" }),
        ] {
            zigzag(&mut h, k.len() as i64);
            h.extend_from_slice(k.as_bytes());
            zigzag(&mut h, v.len() as i64);
            h.extend_from_slice(v.as_bytes());
        }
        zigzag(&mut h, 0);
        h.extend_from_slice(&SYNC);
        out.write_all(&h).unwrap();
        Ocf {
            out,
            block: Vec::new(),
            count: 0,
            deflate,
        }
    }

    fn append(&mut self, body: &[u8]) {
        self.block.extend_from_slice(body);
        self.count += 1;
        if self.block.len() >= 256 << 10 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        let data = if self.deflate {
            miniz_oxide::deflate::compress_to_vec(&self.block, 1)
        } else {
            std::mem::take(&mut self.block)
        };
        let mut h = Vec::new();
        zigzag(&mut h, self.count);
        zigzag(&mut h, data.len() as i64);
        self.out.write_all(&h).unwrap();
        self.out.write_all(&data).unwrap();
        self.out.write_all(&SYNC).unwrap();
        self.block.clear();
        self.count = 0;
    }
}

fn sets() -> Vec<PolicySet> {
    vec![
        PolicySet {
            name: "live".into(),
            policy: Policy::default(),
            tenants: Default::default(),
        },
        PolicySet {
            name: "strict".into(),
            policy: Policy {
                threshold: 3,
                window_ms: 1_800_000,
                ..Policy::default()
            },
            tenants: [(
                "tenant7".to_string(),
                TenantOverrides {
                    threshold: Some(8),
                    ..TenantOverrides::default()
                },
            )]
            .into(),
        },
    ]
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:.2} M verdicts/s", n as f64 / d.as_secs_f64() / 1e6)
}

fn files(n: usize, mailboxes: usize, dir: &Path) {
    let codec = Codec::default();
    let t = Instant::now();
    let null = std::fs::File::create(dir.join("h.avro")).unwrap();
    let deflate = std::fs::File::create(dir.join("h-deflate.avro")).unwrap();
    let mut a = Ocf::new(std::io::BufWriter::new(null), false);
    let mut d = Ocf::new(std::io::BufWriter::new(deflate), true);
    let mut j = std::io::BufWriter::new(std::fs::File::create(dir.join("h.jsonl")).unwrap());
    let mut buf = Vec::new();
    stream(n, mailboxes, 42, |v| {
        buf.clear();
        codec.encode_verdict(v, &mut buf).unwrap();
        let body = codec.body(RecordType::OutboundVerdict, &buf).unwrap();
        a.append(body);
        d.append(body);
        writeln!(
            j,
            "{{\"message_id\":\"{}\",\"tenant_id\":\"{}\",\"mailbox\":\"{}\",\"sent_at\":{},\"verdict\":\"{}\"}}",
            v.message_id,
            v.tenant_id,
            v.mailbox,
            v.sent_at,
            v.verdict.as_str()
        )
        .unwrap();
    });
    a.flush();
    d.flush();
    j.flush().unwrap();
    drop((a, d, j));
    let size = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len() as f64 / 1e6;
    println!(
        "files: {n} verdicts, {mailboxes} mailboxes: Avro {:.0} MB, Avro deflate {:.0} MB, JSON lines {:.0} MB (written in {:.1} s)",
        size("h.avro"),
        size("h-deflate.avro"),
        size("h.jsonl"),
        t.elapsed().as_secs_f64()
    );
}

fn from_files(n: usize, mailboxes: usize) {
    let dir = tempfile::tempdir().unwrap();
    files(n, mailboxes, dir.path());
    let limits = Limits::default();
    for f in ["h.avro", "h-deflate.avro", "h.jsonl"] {
        // Best of three: the first run also warms the page cache.
        let mut best = Duration::MAX;
        let mut trips = (0, 0);
        for _ in 0..3 {
            let mut b = Backtest::new(sets());
            let t = Instant::now();
            input::file(&dir.path().join(f), Range::default(), &limits, &mut b).unwrap();
            best = best.min(t.elapsed());
            let r = mailguard::backtest::Report::of(&b, Default::default());
            trips = (r.total.policies[0].trips, r.total.policies[1].trips);
        }
        println!(
            "file {f:16} two policies: {} (best of 3, {:.2} s; trips live {} strict {})",
            rate(n as u64, best),
            best.as_secs_f64(),
            trips.0,
            trips.1
        );
    }
    // The container decode alone.
    let bytes = std::fs::read(dir.path().join("h.avro")).unwrap();
    let t = Instant::now();
    let mut r = OcfReader::new(&bytes[..]).unwrap();
    let mut offending = 0u64;
    while r
        .next_block(|v| offending += u64::from(v.verdict.is_offending()))
        .unwrap()
    {}
    let d = t.elapsed();
    println!(
        "decode only (Avro, in memory):      {} ({offending} offending)",
        rate(n as u64, d)
    );
    // The core alone, over verdicts decoded beforehand (the first million).
    let m = n.min(1_000_000);
    let mut owned = Vec::with_capacity(m);
    stream(m, mailboxes, 42, |v| owned.push(v.clone()));
    let mut b = Backtest::new(sets());
    let t = Instant::now();
    for v in &owned {
        let r = VerdictRef {
            message_id: &v.message_id,
            tenant_id: &v.tenant_id,
            mailbox: &v.mailbox,
            sent_at: v.sent_at,
            verdict: v.verdict,
        };
        b.verdict(&r, v.sent_at);
    }
    println!(
        "core only (two policies, {m} in memory): {}",
        rate(m as u64, t.elapsed())
    );
}

fn from_topic(bootstrap: &str, n: usize, mailboxes: usize) {
    let topic = format!("bt{:08x}.verdicts", rand::random::<u32>());
    let admin_cfg = {
        let mut c = Config::default();
        c.kafka.bootstrap_servers = bootstrap.to_string();
        c.kafka.group_id = format!("{topic}-group");
        c.topics.verdicts = topic.clone();
        c
    };
    // The topic, then the stream onto it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    PARTITIONS,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
    });
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let codec = Codec::default();
    let t = Instant::now();
    stream(n, mailboxes, 43, |v| {
        let mut buf = Vec::new();
        codec.encode_verdict(v, &mut buf).unwrap();
        loop {
            match producer.send(BaseRecord::to(&topic).key(&v.mailbox).payload(&buf)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    });
    producer.flush(Duration::from_secs(120)).unwrap();
    println!(
        "topic: {n} verdicts on {PARTITIONS} partitions (produced in {:.1} s)",
        t.elapsed().as_secs_f64()
    );

    // Baseline: a raw read_committed consumer to the end.
    let raw: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-raw"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    let t = Instant::now();
    raw.assign(&tpl).unwrap();
    let (mut read, mut ended) = (0usize, 0);
    let mut bytes = 0usize;
    while ended < PARTITIONS {
        match raw.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                read += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ended += 1,
            Some(Err(e)) => panic!("raw consumer: {e}"),
            None => panic!("raw consumer: nothing for 10 s"),
        }
    }
    let raw_d = t.elapsed();
    assert_eq!(read, n, "the raw consumer read {read} ({bytes} bytes)");
    // The backtest over the same topic, two policies.
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("strict.toml");
    std::fs::write(
        &candidate,
        "name = \"strict\"\n[policy]\nthreshold = 3\nwindow_ms = 1800000\n",
    )
    .unwrap();
    let args = BacktestArgs {
        file: None,
        topic: Some(String::new()),
        from: None,
        to: None,
        candidates: vec![candidate],
        json: Some(dir.path().join("r.json")),
        html: None,
        trips: None,
    };
    let t = Instant::now();
    let report = mailguard::backtest::backtest(&admin_cfg, &args).unwrap();
    let bt_d = t.elapsed();
    assert_eq!(report.input.verdicts as usize, n);
    println!(
        "topic: raw consumer {} ({:.2} s); backtest, two policies, {} ({:.2} s): {:.2}× the raw consumer",
        rate(n as u64, raw_d),
        raw_d.as_secs_f64(),
        rate(n as u64, bt_d),
        bt_d.as_secs_f64(),
        raw_d.as_secs_f64() / bt_d.as_secs_f64()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("backtest bench: run with `cargo bench --bench backtest`");
        return;
    }
    let n = env_usize("BT_VERDICTS", 5_000_000);
    let mailboxes = env_usize("BT_MAILBOXES", 200_000);
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    from_files(n, mailboxes);
    let broker = std::env::var("MAILGUARD_BENCH_BOOTSTRAP")
        .or_else(|_| std::env::var("MAILGUARD_TEST_BOOTSTRAP"));
    match broker {
        Ok(b) => from_topic(&b, env_usize("BT_TOPIC_VERDICTS", 2_000_000), mailboxes),
        Err(_) => {
            println!("topic: skipped (no MAILGUARD_BENCH_BOOTSTRAP / MAILGUARD_TEST_BOOTSTRAP)")
        }
    }
}
