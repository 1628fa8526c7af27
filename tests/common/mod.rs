//! Shared helpers of the integration tests: the real broker started by `make test`, random
//! topic and group names per test, and produce / consume helpers that wait for events (records
//! arriving), never for a fixed time.
#![allow(dead_code)]

pub mod api;
mod builders;
#[allow(unused_imports)] // each test binary uses some
pub use builders::{verdict_bytes, NoDirectory};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use mailguard::config::Config;
use mailguard::telemetry::{Health, Metrics};
use mailguard::timers::Clock;

/// The broker of this test run (`make test` starts it and sets the variable).
pub fn bootstrap() -> String {
    std::env::var("MAILGUARD_TEST_BOOTSTRAP").expect(
        "MAILGUARD_TEST_BOOTSTRAP is not set: integration tests need the real broker; run `make test`",
    )
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}-{n:016x}")
}

/// A configuration on random topics, group and state dir, topics created on start.
pub fn test_config(partitions: i32) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = Config::default();
    let id = unique("t");
    cfg.kafka.bootstrap_servers = bootstrap();
    cfg.kafka.group_id = format!("{id}-group");
    cfg.kafka.instance_id = "0".into();
    cfg.kafka.transactional_id_prefix = format!("{id}-tx");
    cfg.kafka.commit_interval_ms = 50;
    cfg.kafka.session_timeout_ms = 6_000;
    group_protocol_of_the_run(&mut cfg.kafka);
    let t = &mut cfg.topics;
    t.verdicts = format!("{id}.verdicts");
    t.mailboxes = format!("{id}.mailboxes");
    t.devices = format!("{id}.devices");
    t.tenants = format!("{id}.tenants");
    t.commands = format!("{id}.commands");
    t.blocks = format!("{id}.blocks");
    t.scan_requests = format!("{id}.scans");
    t.alerts = format!("{id}.alerts");
    t.events = format!("{id}.events");
    t.dlq = format!("{id}.dlq");
    t.changelog = format!("{id}.changelog");
    t.exemptions = format!("{id}.exemptions");
    t.scan_results = format!("{id}.scan-results");
    t.scan_results_routed = format!("{id}.scan-results-routed");
    t.partitions = partitions;
    t.create_missing = true;
    cfg.state.dir = dir.path().join("state");
    cfg.state.tick_interval_ms = 100;
    cfg.http.listen = "127.0.0.1:0".into();
    // The early warning (default threshold − 1) is off here: tests that count every record of
    // a burst predate it; the tests of the warning turn it back on (`warn_threshold = None`).
    cfg.policy.warn_threshold = Some(0);
    (cfg, dir)
}

/// The group protocol and membership the tests run under: the defaults unless
/// `MAILGUARD_TEST_GROUP_PROTOCOL` (`classic` | `consumer`) or `MAILGUARD_TEST_STATIC_MEMBERSHIP`
/// (`true` | `false`) say otherwise, so the pipeline and chaos tests run under either protocol.
pub fn group_protocol_of_the_run(k: &mut mailguard::config::KafkaConfig) {
    if let Ok(p) = std::env::var("MAILGUARD_TEST_GROUP_PROTOCOL") {
        k.group_protocol = match p.as_str() {
            "classic" => mailguard::config::GroupProtocol::Classic,
            "consumer" => mailguard::config::GroupProtocol::Consumer,
            other => panic!("MAILGUARD_TEST_GROUP_PROTOCOL={other}: classic or consumer"),
        };
    }
    if let Ok(s) = std::env::var("MAILGUARD_TEST_STATIC_MEMBERSHIP") {
        k.static_membership = s
            .parse()
            .expect("MAILGUARD_TEST_STATIC_MEMBERSHIP: true or false");
    }
}

/// Create the configuration's topics now (tests that produce before the pipeline starts).
///
/// A broker stalled by a loaded machine (a JVM pause of seconds while the compiler and other
/// tests have the CPU) answers for a moment "Invalid replication factor": it has fenced itself
/// and counts no live broker. Creating is idempotent, so that is retried for a minute, as the
/// readers do; the tests are about mailguard, not about how fast the broker recovers.
pub fn create_topics(cfg: &Config) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    retried_for_a_minute("create topics", || {
        rt.block_on(mailguard::kafka::admin::ensure_topics(cfg))
    });
}

/// `attempt` until it succeeds, for up to a minute, saying each failure; then the last failure
/// is the test's. For requests a broker stalled by a loaded machine fails for a moment, that
/// are safe to repeat.
fn retried_for_a_minute<T, E: std::fmt::Display>(
    what: &str,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A broker of this test run and the client properties that reach it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub bootstrap: String,
    pub props: BTreeMap<String, String>,
}

impl Cluster {
    /// The PLAINTEXT broker every test uses.
    pub fn plain() -> Cluster {
        Cluster {
            bootstrap: bootstrap(),
            props: BTreeMap::new(),
        }
    }

    /// A client configuration for this cluster.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.props {
            c.set(k, v);
        }
        c
    }
}

/// A plain producer on the test broker.
pub fn producer() -> BaseProducer {
    producer_on(&Cluster::plain())
}

/// A producer on `cluster`, partitioning as the Java client does.
pub fn producer_on(cluster: &Cluster) -> BaseProducer {
    cluster
        .client()
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

/// Produce and wait until the broker acknowledged everything.
pub fn produce(topic: &str, records: &[(Option<&str>, Option<Vec<u8>>)]) {
    produce_on(&Cluster::plain(), topic, records)
}

/// [`produce`] of keyed values (no tombstones, no missing keys).
pub fn produce_keyed<K: AsRef<str>>(topic: &str, records: &[(K, Vec<u8>)]) {
    let recs: Vec<(Option<&str>, Option<Vec<u8>>)> = records
        .iter()
        .map(|(k, v)| (Some(k.as_ref()), Some(v.clone())))
        .collect();
    produce(topic, &recs)
}

/// [`produce`] on `cluster`.
pub fn produce_on(cluster: &Cluster, topic: &str, records: &[(Option<&str>, Option<Vec<u8>>)]) {
    let p = producer_on(cluster);
    for (key, value) in records {
        let mut r: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
        if let Some(k) = key {
            r = r.key(*k);
        }
        if let Some(v) = value {
            r = r.payload(v.as_slice());
        }
        p.send(r).map_err(|(e, _)| e).expect("send");
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    /// The record's timestamp (for mailguard's outputs: when it produced them), epoch ms.
    pub timestamp: Option<i64>,
}

/// A read_committed reader of every partition of `topic` from the beginning.
pub fn reader(topic: &str) -> BaseConsumer {
    reader_on(&Cluster::plain(), topic)
}

/// [`reader`] on `cluster`.
pub fn reader_on(cluster: &Cluster, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = cluster
        .client()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    // The partition count, the way mailguard gets it: a topic created a moment ago, or a
    // connection the broker dropped under load, is retried for a while, not a test failure.
    // mailguard gives up after its grace period; a reader keeps trying for a minute, because
    // on a loaded test machine the broker has stalled for more than ten seconds (and the test
    // is about what mailguard does, not about how fast the broker answers).
    let n = retried_for_a_minute(&format!("topic {topic}"), || {
        mailguard::kafka::admin::partition_count(&c, topic)
    });
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

fn to_rec(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    let mut headers = BTreeMap::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            headers.insert(
                x.key.to_string(),
                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
            );
        }
    }
    Rec {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        timestamp: m.timestamp().to_millis(),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Read `topic` (read_committed) until `done(records)` holds, or fail after `timeout`.
pub fn consume_until(
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Rec]) -> bool,
) -> Vec<Rec> {
    let c = reader(topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "timed out on {topic} with {} records: {out:?}",
            out.len()
        );
        if let Some(m) = next(&c, topic) {
            out.push(m);
        }
    }
    out
}

/// The next record within 100 ms, if any. An error from the poll is the client reporting
/// trouble it recovers from by itself (`AllBrokersDown` while a loaded broker stalls for a few
/// seconds, a dropped connection): said and polled past, as any consumer would; the callers'
/// deadlines bound the wait.
fn next(c: &BaseConsumer, topic: &str) -> Option<Rec> {
    match c.poll(Duration::from_millis(100))? {
        Ok(m) => Some(to_rec(&m)),
        Err(e) => {
            eprintln!("reading {topic}: {e}; polling on");
            None
        }
    }
}

/// Read exactly `n` records, then make sure no more arrive for `settle` (used to prove
/// "exactly once": nothing extra shows up after the expected records).
pub fn consume_exactly(topic: &str, n: usize, timeout: Duration, settle: Duration) -> Vec<Rec> {
    consume_exactly_on(&Cluster::plain(), topic, n, timeout, settle)
}

/// [`consume_exactly`] on `cluster`.
pub fn consume_exactly_on(
    cluster: &Cluster,
    topic: &str,
    n: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Rec> {
    let c = reader_on(cluster, topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out on {topic}: {} of {n} records: {out:?}",
            out.len()
        );
        if let Some(m) = next(&c, topic) {
            out.push(m);
        }
    }
    let quiet_until = Instant::now() + settle;
    while Instant::now() < quiet_until {
        if let Some(extra) = next(&c, topic) {
            panic!("unexpected extra record on {topic}: {extra:?} after {out:?}");
        }
    }
    out
}

/// mailguard running in-process on its own runtime thread, stopped on drop.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    pub metrics: Metrics,
    pub health: Health,
}

impl Running {
    /// Stop and return how the pipeline ended.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().unwrap().join().expect("pipeline thread")
    }

    /// Wait until the instance reports ready (tables loaded, partitions restored).
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.health.is_ready() {
            assert!(Instant::now() < deadline, "mailguard did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Logs of in-process pipelines go through libtest's capture, so a failing test prints what its
/// pipeline said (`RUST_LOG` overrides the default filter).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Start the pipeline in-process with the given clock.
pub fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Running {
    init_logging();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = Metrics::new();
    let health = Health::default();
    let (m, h, cfg) = (metrics.clone(), health.clone(), cfg.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let ended = rt
            .block_on(mailguard::pipeline::run(cfg, m, h, clock, async {
                let _ = rx.await;
            }))
            .map_err(|e| e.to_string());
        // Said at once: a test waiting for output would otherwise only time out, and the cause
        // would surface (from `stop`) after the timeout's panic, that is never.
        if let Err(e) = &ended {
            eprintln!("the mailguard instance under test stopped with an error: {e}");
        }
        ended
    });
    Running {
        stop: Some(tx),
        thread: Some(thread),
        metrics,
        health,
    }
}

/// Path of the built binary (set by `make test`; falls back to cargo's target dir).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MAILGUARD_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_mailguard"))
}

/// Now in epoch ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `scripts/kafka-local <args> --dir <dir>`, asserting it succeeded; returns its stdout.
pub fn kafka_local(dir: &std::path::Path, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local");
    let out = std::process::Command::new(script)
        .args(args)
        .args(["--dir", dir.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/kafka-local");
    assert!(
        out.status.success(),
        "kafka-local {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The real binary running `config_path`, its log appended to `log`.
pub fn spawn_binary(config_path: &std::path::Path, log: &std::path::Path) -> Instance {
    spawn_binary_logging(config_path, log, "info,rdkafka=warn")
}

/// Prints the end of an instance's log if the test fails while it is in scope: the log lives in
/// the test's temporary directory, which is gone by the time anyone looks.
pub struct LogOnFailure(pub std::path::PathBuf);

impl Drop for LogOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- the last {} lines of {} ---\n{}",
                tail.len(),
                self.0.display(),
                tail.join("\n")
            );
        }
    }
}

/// [`spawn_binary`] with the `RUST_LOG` filter `filter`.
pub fn spawn_binary_logging(
    config_path: &std::path::Path,
    log: &std::path::Path,
    filter: &str,
) -> Instance {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(binary())
        .args(["--config", config_path.to_str().unwrap(), "run"])
        .env_remove("MAILGUARD_CONFIG")
        .env("RUST_LOG", filter)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(Instance)
        .expect("spawn mailguard")
}

/// A mailguard process that is killed when it goes out of scope: a failing test must not leave
/// an instance running (one did, and went on using the shared broker for minutes).
pub struct Instance(pub std::process::Child);

impl std::ops::Deref for Instance {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `MailboxOwner` of `mailbox` and the `OwnerDevices` of its owner, encoded with the default
/// codec (the values of `directory.mailboxes` and `directory.devices`).
pub fn owner_records(
    mailbox: &str,
    tenant: &str,
    owner_id: &str,
    devices: &[&str],
) -> (Vec<u8>, Vec<u8>) {
    let codec = mailguard::codec::Codec::default();
    let (mut owner, mut owned) = (Vec::new(), Vec::new());
    let o = mailguard::policy::Owner {
        owner_id: owner_id.into(),
        tenant_id: tenant.into(),
        owner_name: None,
    };
    codec.encode_owner(mailbox, &o, &mut owner).unwrap();
    let d = mailguard::codec::OwnerDevices {
        owner_id: owner_id.into(),
        tenant_id: tenant.into(),
        device_ids: devices.iter().map(|d| d.to_string()).collect(),
    };
    codec.encode_devices(&d, &mut owned).unwrap();
    (owner, owned)
}

/// The sum of the series of `name` in a Prometheus text exposition whose labels include `label`
/// (`key="value"`): a count across the values of the other labels.
pub fn series_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| l.split_once("} "))
        .filter(|(labels, _)| labels.split(',').any(|l| l == label))
        .map(|(_, v)| v.trim().parse::<f64>().expect("a sample value"))
        .sum()
}
