//! Faults while verdicts flow, each checked for exactly-once outputs (every expected block and
//! alert once, nothing else):
//!
//! - broker restarts, one short and one longer than the consumer session timeout, on a broker of
//!   the test's own (the shared test broker cannot be restarted under the other tests);
//! - `kill -9` of one of two instances in a group, with the failover time reported;
//! - three instances under a steady stream of trips: `kill -9` of one, then its restart.
//!
//! Found by trying it: after a broker restart the static consumer could be fenced
//! (`FencedInstanceId`), log it, and go on processing nothing with `/healthz` green.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mailguard::codec::Codec;
use mailguard::policy::{Effect, VerdictKind};
use mailguard::timers::SystemClock;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

/// A single-node broker started by `scripts/kafka-local` for this test only.
struct OwnBroker {
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnBroker {
    fn start() -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let b = OwnBroker {
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        b.up();
        b
    }

    fn kafka_local(&self, args: &[&str]) {
        common::kafka_local(&self.instance(), args);
    }

    fn instance(&self) -> PathBuf {
        self.dir.path().join("kafka")
    }

    fn up(&self) {
        self.kafka_local(&["up", "--port", &self.port.to_string()]);
    }

    fn down(&self) {
        self.kafka_local(&["down"]);
    }

    /// Stops the broker, keeps it down for `down_for` (the fault itself), starts it again on
    /// the same data and returns once it answers.
    fn restart(&self, down_for: Duration) {
        self.down();
        std::thread::sleep(down_for);
        self.up();
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local"))
            .args([
                "down",
                "--purge",
                "--dir",
                self.instance().to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .output();
    }
}

/// Delivery reports of the test's own producer: which records the broker acknowledged.
struct Acks(Arc<Mutex<Vec<bool>>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if result.is_ok() {
            self.0.lock().unwrap()[index] = true;
        }
    }
}

/// The test's input producer, which must get every verdict through two broker restarts.
///
/// librdkafka's idempotent producer has been seen, once in about ten runs, to stall for good
/// after such a restart (`new leader-1 not found in cache` logged for a partition whose leader
/// was unknown while the broker started, then nothing delivered for five minutes). That is a
/// fault of the test's input, not of mailguard, so the harness works around it the way a
/// gateway would: when a flush round acknowledges nothing, it replaces its producer and sends
/// again what was not acknowledged. A record written but not acknowledged is then sent twice;
/// mailguard must (and does) count a redelivered message once, so the outputs the test checks
/// stay exactly once.
struct RestartTolerantProducer {
    cluster: Cluster,
    topic: String,
    acked: Arc<Mutex<Vec<bool>>>,
    producer: BaseProducer<Acks>,
}

impl RestartTolerantProducer {
    fn new(cluster: Cluster, topic: String, records: usize) -> RestartTolerantProducer {
        let acked = Arc::new(Mutex::new(vec![false; records]));
        let producer = Self::create(&cluster, &acked);
        RestartTolerantProducer {
            cluster,
            topic,
            acked,
            producer,
        }
    }

    fn create(cluster: &Cluster, acked: &Arc<Mutex<Vec<bool>>>) -> BaseProducer<Acks> {
        // Through the outages the producer buffers and retries; it may take as long as both
        // outages and restarts together, so its timeouts are generous.
        cluster
            .client()
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "300000")
            .create_with_context(Acks(acked.clone()))
            .expect("producer")
    }

    fn poll(&self, timeout: Duration) {
        self.producer.poll(timeout);
    }

    fn send(&self, index: usize, key: &str, value: &[u8]) {
        let record = BaseRecord::with_opaque_to(&self.topic, index)
            .key(key)
            .payload(value);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("send");
    }

    fn unacknowledged(&self) -> Vec<usize> {
        let acked = self.acked.lock().unwrap();
        (0..acked.len()).filter(|&i| !acked[i]).collect()
    }

    /// Flushes in rounds of 20 s; after a round that acknowledged nothing, starts over with a
    /// new producer for what is left. Panics if `budget` passes with records unacknowledged.
    fn deliver_all(&mut self, records: &[(String, Vec<u8>)], budget: Duration) {
        let deadline = Instant::now() + budget;
        let mut left = self.unacknowledged().len();
        while self.producer.flush(Duration::from_secs(20)).is_err() {
            let now_left = self.unacknowledged();
            assert!(
                Instant::now() < deadline,
                "{} of {} verdicts never acknowledged",
                now_left.len(),
                records.len()
            );
            if now_left.len() < left {
                left = now_left.len();
                continue;
            }
            eprintln!(
                "test producer: no acknowledgement for 20 s with {} verdicts left; \
                 replacing it and sending them again",
                now_left.len()
            );
            self.producer = Self::create(&self.cluster, &self.acked);
            for i in self.unacknowledged() {
                self.send(i, &records[i].0, &records[i].1);
            }
        }
        assert!(
            self.unacknowledged().is_empty(),
            "flushed but not all acknowledged"
        );
    }
}

fn burst(mailbox: &str) -> Vec<(String, Vec<u8>)> {
    let now = now_ms();
    (0..5)
        .map(|i| {
            let id = format!("{mailbox}-{i}");
            let out = verdict_bytes("tenant-1", mailbox, &id, now + i, VerdictKind::Spam);
            (mailbox.to_string(), out)
        })
        .collect()
}

#[test]
fn broker_restarts_mid_stream_lose_and_duplicate_nothing() {
    let broker = OwnBroker::start();
    let cluster = Cluster {
        bootstrap: broker.bootstrap(),
        props: Default::default(),
    };
    let (mut cfg, _dir) = test_config(3);
    cfg.kafka.bootstrap_servers = broker.bootstrap();
    create_topics(&cfg);
    let running = start(&cfg, Arc::new(SystemClock));
    running.wait_ready(Duration::from_secs(60));

    // One mailbox trips every 250 ms for 20 s, through both outages.
    const MAILBOXES: usize = 80;
    let mailboxes: Vec<String> = (0..MAILBOXES)
        .map(|i| format!("chaos-{i}@example.com"))
        .collect();
    let producer = {
        let (cluster, topic) = (
            Cluster {
                bootstrap: cluster.bootstrap.clone(),
                props: Default::default(),
            },
            cfg.topics.verdicts.clone(),
        );
        let records: Vec<(String, Vec<u8>)> = mailboxes.iter().flat_map(|m| burst(m)).collect();
        std::thread::spawn(move || {
            let mut producer = RestartTolerantProducer::new(cluster, topic, records.len());
            let started = Instant::now();
            for (i, chunk) in records.chunks(5).enumerate() {
                // One mailbox's burst every 250 ms.
                let due = started + Duration::from_millis(250 * i as u64);
                while Instant::now() < due {
                    producer.poll(due.saturating_duration_since(Instant::now()));
                }
                for (j, (key, value)) in chunk.iter().enumerate() {
                    producer.send(i * 5 + j, key, value);
                }
            }
            producer.deliver_all(&records, Duration::from_secs(300));
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    broker.restart(Duration::from_secs(3));
    // Longer than the consumer session timeout: the group forgets its member meanwhile.
    broker.restart(Duration::from_millis(cfg.kafka.session_timeout_ms + 4_000));
    producer.join().expect("producer thread");

    let t = Duration::from_secs(120);
    let settle = Duration::from_secs(3);
    let blocks = consume_exactly_on(&cluster, &cfg.topics.blocks, MAILBOXES, t, settle);
    let mut blocked: Vec<String> = blocks
        .iter()
        .map(|r| {
            match Codec::default()
                .decode_effect(r.value.as_deref().unwrap())
                .unwrap()
            {
                Effect::Block(b) => b.mailbox,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    blocked.sort();
    let mut expected = mailboxes.clone();
    expected.sort();
    assert_eq!(blocked, expected, "every mailbox blocked exactly once");
    consume_exactly_on(&cluster, &cfg.topics.alerts, MAILBOXES, t, settle);
    consume_exactly_on(&cluster, &cfg.topics.dlq, 0, t, settle);
    assert!(running.health.is_live(), "alive and processing");
    running.stop().expect("pipeline ended cleanly");
}

/// The real binary on `cfg` (its configuration and log written to `dir`).
fn spawn(cfg: &mailguard::config::Config, dir: &Path, name: &str) -> Instance {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(cfg).unwrap()).unwrap();
    spawn_binary(&path, &dir.join(format!("{name}.log")))
}

#[test]
fn kill_9_of_one_of_two_instances_fails_over_exactly_once() {
    let (mut cfg, dir) = test_config(4);
    cfg.topics.create_missing = false;
    create_topics(&cfg);
    let mut a_cfg = cfg.clone();
    a_cfg.kafka.instance_id = "a".into();
    a_cfg.state.dir = dir.path().join("state-a");
    let mut b_cfg = cfg.clone();
    b_cfg.kafka.instance_id = "b".into();
    b_cfg.state.dir = dir.path().join("state-b");
    let mut a = spawn(&a_cfg, dir.path(), "a");
    let mut b = spawn(&b_cfg, dir.path(), "b");

    // A first mailbox on each partition trips before the fault: both instances are up and own
    // their share once all four are blocked.
    const MAILBOXES: usize = 60;
    let mailboxes: Vec<String> = (0..MAILBOXES)
        .map(|i| format!("fail-{i}@example.com"))
        .collect();
    let send = |m: &str| -> i64 {
        produce_keyed(&cfg.topics.verdicts, &burst(m));
        now_ms()
    };
    let mut sent_at = std::collections::HashMap::new();
    for m in &mailboxes[..8] {
        sent_at.insert(m.clone(), send(m));
    }
    consume_exactly(
        &cfg.topics.blocks,
        8,
        Duration::from_secs(120),
        Duration::ZERO,
    );
    // Under load: one mailbox trips every 100 ms; A dies a second in.
    let mut send_paced = |ms: &[String]| {
        for m in ms {
            sent_at.insert(m.clone(), send(m));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    send_paced(&mailboxes[8..18]);
    a.kill().expect("kill -9");
    a.wait().unwrap();
    let killed_at = now_ms();
    send_paced(&mailboxes[18..]);

    let blocks = consume_exactly(
        &cfg.topics.blocks,
        MAILBOXES,
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    consume_exactly(
        &cfg.topics.alerts,
        MAILBOXES,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let mut blocked: Vec<&str> = blocks.iter().filter_map(|r| r.key.as_deref()).collect();
    blocked.sort();
    blocked.dedup();
    assert_eq!(
        blocked.len(),
        MAILBOXES,
        "every mailbox blocked exactly once"
    );
    // Failover: the longest a burst sent after the kill waited for its block.
    let failover_ms = blocks
        .iter()
        .filter_map(|r| {
            let sent = sent_at[r.key.as_deref()?];
            let produced = r.timestamp?;
            (sent >= killed_at).then_some(produced - sent)
        })
        .max()
        .expect("blocks after the kill");
    eprintln!(
        "failover after kill -9: {:.1} s (session timeout {} s)",
        failover_ms as f64 / 1000.0,
        cfg.kafka.session_timeout_ms / 1000
    );
    assert!(
        failover_ms < cfg.kafka.session_timeout_ms as i64 + 30_000,
        "failover took {failover_ms} ms"
    );
    b.kill().unwrap();
    b.wait().unwrap();
}

#[test]
fn a_zombies_open_transaction_is_waited_for_before_restoring() {
    use mailguard::policy::{self, Input, MailboxState, Policy};
    use rdkafka::consumer::{BaseConsumer, Consumer};

    // A previous owner (the zombie) processed four offending verdicts of one mailbox: its open
    // transaction holds their state change in the changelog and their offsets for the group.
    let (cfg, _dir) = test_config(1);
    create_topics(&cfg);
    let mb = "zombie-victim@example.com";
    let records = burst(mb);
    produce_keyed(&cfg.topics.verdicts, &records[..4]);
    let policy = Policy::default();
    let mut state = MailboxState::default();
    let now = now_ms();
    for (i, (_, bytes)) in records[..4].iter().enumerate() {
        let v = Codec::default().decode_verdict(bytes).unwrap();
        policy::step(
            &mut state,
            &Input::Verdict(v),
            now + i as i64,
            &NoDirectory,
            &policy,
        );
    }
    let mut encoded = Vec::new();
    state.encode(&mut encoded);

    let zombie: BaseProducer = Cluster::plain()
        .client()
        .set("transactional.id", common::unique("zombie"))
        .create()
        .expect("zombie producer");
    let t = Duration::from_secs(30);
    zombie.init_transactions(t).unwrap();
    zombie.begin_transaction().unwrap();
    zombie
        .send(
            BaseRecord::to(&cfg.topics.changelog)
                .partition(0)
                .key(mb)
                .payload(&encoded),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    zombie.flush(t).unwrap();
    let group: BaseConsumer = Cluster::plain()
        .client()
        .set("group.id", &cfg.kafka.group_id)
        .create()
        .unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(&cfg.topics.verdicts, 0, rdkafka::Offset::Offset(4))
        .unwrap();
    zombie
        .send_offsets_to_transaction(&offsets, &group.group_metadata().unwrap(), t)
        .unwrap();

    // The new owner starts while that transaction is open; the zombie commits three seconds
    // later (the fault is the delay: nothing to await).
    let running = start(&cfg, Arc::new(SystemClock));
    std::thread::sleep(Duration::from_secs(3));
    zombie.commit_transaction(t).unwrap();
    running.wait_ready(Duration::from_secs(60));

    // The fifth offending verdict trips only if the new owner has the zombie's four: its
    // committed offsets skip them, so they count only through the restored state.
    produce_keyed(&cfg.topics.verdicts, &records[4..]);
    let blocks = consume_exactly(
        &cfg.topics.blocks,
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(blocks[0].key.as_deref(), Some(mb));
    running.stop().unwrap();
}

/// Records of `topic` as a read_uncommitted consumer sees them: aborted transactions included.
fn count_uncommitted(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = Cluster::plain()
        .client()
        .set("group.id", common::unique("uncommitted"))
        .set("isolation.level", "read_uncommitted")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let n = mailguard::kafka::admin::partition_count(&c, topic).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut records, mut ends) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ends < n && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => records += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ends += 1,
            _ => {}
        }
    }
    records
}

#[test]
fn kill_9_inside_the_commit_path_loses_and_duplicates_nothing() {
    // Each kill waits for the processor's "changelog staged" line: the transaction's outputs
    // and changelog records are then produced, and its commit is a few milliseconds away. The
    // test proves afterwards that kills landed there: records of aborted transactions exist.
    let (mut cfg, dir) = test_config(2);
    cfg.topics.create_missing = false;
    cfg.kafka.commit_interval_ms = 200;
    // Early commits off: a commit right after the batch that tripped (caught up, it waits only
    // one commit's duration) finds the outputs still in the producer's linger, and a kill there
    // leaves nothing on the broker for the test to find. At the interval they are there.
    cfg.kafka.trip_commit_gap_ms = cfg.kafka.commit_interval_ms;
    create_topics(&cfg);
    let config_path = dir.path().join("mailguard.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let log = dir.path().join("mailguard.log");
    let _show = common::LogOnFailure(log.clone());
    let filter = "info,rdkafka=warn,mailguard::pipeline::processor=debug";
    let mut child = common::spawn_binary_logging(&config_path, &log, filter);

    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 10;
    let mut mailboxes = Vec::new();
    for round in 0..ROUNDS {
        let seen = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let ms: Vec<String> = (0..PER_ROUND)
            .map(|i| format!("commit-{round}-{i}@example.com"))
            .collect();
        let records: Vec<(String, Vec<u8>)> = ms.iter().flat_map(|m| burst(m)).collect();
        produce_keyed(&cfg.topics.verdicts, &records);
        mailboxes.extend(ms);
        if round == ROUNDS - 1 {
            break;
        }
        // The first commit that stages changelog records after this round's input.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read(&log).unwrap_or_default();
            let new =
                String::from_utf8_lossy(&text[(seen as usize).min(text.len())..]).into_owned();
            if new.contains("changelog staged") {
                break;
            }
            // An instance that exited, or a deadline missed (the log is printed on failure).
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no commit after round {round} (instance exited: {exited:?})"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().expect("kill -9");
        child.wait().unwrap();
        child = common::spawn_binary_logging(&config_path, &log, filter);
    }

    let n = mailboxes.len();
    let t = Duration::from_secs(120);
    let blocks = consume_exactly(&cfg.topics.blocks, n, t, Duration::from_secs(3));
    let mut blocked: Vec<&str> = blocks.iter().filter_map(|r| r.key.as_deref()).collect();
    blocked.sort();
    blocked.dedup();
    assert_eq!(blocked.len(), n, "every mailbox blocked exactly once");
    consume_exactly(&cfg.topics.alerts, n, t, Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    // Aborted transactions' records: visible read_uncommitted, never read_committed.
    let aborted = count_uncommitted(&cfg.topics.blocks) - n;
    eprintln!(
        "{aborted} block records of aborted transactions ({} kills)",
        ROUNDS - 1
    );
    assert!(
        aborted > 0,
        "no kill landed between produce and commit: the test proved nothing"
    );
}

/// The directory of the three-instance test: mailbox i is owned by `owner-i` with the one
/// device `device-i`, so each trip has one scan request.
fn directory(cfg: &mailguard::config::Config, mailboxes: &[String]) {
    use mailguard::codec::OwnerDevices;
    use mailguard::policy::Owner;
    let codec = Codec::default();
    let (mut owners, mut devices) = (Vec::new(), Vec::new());
    for (i, mb) in mailboxes.iter().enumerate() {
        let owner = Owner {
            owner_id: format!("owner-{i}"),
            tenant_id: "tenant-1".into(),
            owner_name: None,
        };
        let mut out = Vec::new();
        codec.encode_owner(mb, &owner, &mut out).unwrap();
        owners.push((mb.clone(), out));
        let d = OwnerDevices {
            owner_id: format!("owner-{i}"),
            tenant_id: "tenant-1".into(),
            device_ids: vec![format!("device-{i}")],
        };
        let mut out = Vec::new();
        codec.encode_devices(&d, &mut out).unwrap();
        devices.push((format!("owner-{i}"), out));
    }
    produce_keyed(&cfg.topics.mailboxes, &owners);
    produce_keyed(&cfg.topics.devices, &devices);
}

/// A producer thread tripping `mailboxes[i]` (a burst of five) every `every`, in order, until
/// `stop` is set or the list ends; `sent` counts the bursts the broker acknowledged.
struct PacedTrips {
    sent: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PacedTrips {
    fn start(topic: String, mailboxes: Vec<String>, every: Duration) -> PacedTrips {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (sent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let p = producer();
            let started = Instant::now();
            for (i, mb) in mailboxes.iter().enumerate() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let due = started + every * i as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                for (key, value) in burst(mb) {
                    let r = BaseRecord::<str, [u8]>::to(&topic)
                        .key(&key)
                        .payload(&value);
                    p.send(r).map_err(|(e, _)| e).expect("send");
                }
                // A broker stalled by a loaded machine answers late, not never: the records
                // wait in the producer (for up to its message timeout) and are flushed again.
                let deadline = Instant::now() + Duration::from_secs(300);
                while let Err(e) = p.flush(Duration::from_secs(10)) {
                    assert!(Instant::now() < deadline, "trips not acknowledged: {e}");
                    eprintln!("trips: flush: {e}; flushing on");
                }
                s.store(i + 1, Ordering::SeqCst);
            }
        });
        PacedTrips {
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops the trips; returns how many mailboxes tripped.
    fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("producer thread");
        self.sent()
    }
}

impl Drop for PacedTrips {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Waits until every one of `partitions` partitions has a block of a mailbox from
/// `mailboxes[from..]`: the group processes all partitions since that mailbox's trip.
fn every_partition_blocks_from(
    cfg: &mailguard::config::Config,
    mailboxes: &[String],
    from: usize,
    what: &str,
) {
    use mailguard::kafka::partitioner::partition_for;
    let n = cfg.topics.partitions;
    let later: std::collections::HashSet<&str> =
        mailboxes[from..].iter().map(String::as_str).collect();
    let started = Instant::now();
    consume_until(&cfg.topics.blocks, Duration::from_secs(180), |recs| {
        let mut seen = std::collections::HashSet::new();
        for k in recs.iter().filter_map(|r| r.key.as_deref()) {
            if later.contains(k) {
                seen.insert(partition_for(k.as_bytes(), n));
            }
        }
        seen.len() == n as usize
    });
    eprintln!(
        "{what}: every partition blocks again {:.1} s later",
        started.elapsed().as_secs_f64()
    );
}

/// The last "partitions assigned" line of an instance's log, after byte `from`, names a
/// partition: the instance owns part of the group's input.
fn owns_partitions(log: &Path, from: usize) -> bool {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[from.min(text.len())..]).into_owned();
    text.lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))
        .is_some_and(|l| !without_colours(l).contains("owned={}"))
}

/// `line` without its ANSI colour sequences (the binary colours its log lines).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits (on the log) until each of `logs` owns partitions.
fn until_each_owns_partitions(logs: &[(PathBuf, usize)]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !logs.iter().all(|(log, from)| owns_partitions(log, *from)) {
        assert!(
            Instant::now() < deadline,
            "not every instance owns partitions"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three instances in one group while a mailbox trips every 75 ms on six partitions: one is
/// killed (-9) and, once the other two block on all partitions, restarted with its instance id
/// and state directory while the trips go on. Every trip yields exactly one block, one alert
/// and one scan request (decoded: the right mailbox, owner and device), nothing else.
#[test]
fn three_instances_kill_9_and_restart_of_one_under_load_exactly_once() {
    let (mut cfg, dir) = test_config(6);
    cfg.topics.create_missing = false;
    create_topics(&cfg);
    let mailboxes: Vec<String> = (0..1200)
        .map(|i| format!("three-{i}@example.com"))
        .collect();
    directory(&cfg, &mailboxes);
    let instance = |id: &str| {
        let mut c = cfg.clone();
        c.kafka.instance_id = id.into();
        c.state.dir = dir.path().join(format!("state-{id}"));
        c
    };
    let log = |id: &str| dir.path().join(format!("{id}.log"));
    let _logs: Vec<LogOnFailure> = ["a", "b", "c"].map(|i| LogOnFailure(log(i))).into();
    let mut a = spawn(&instance("a"), dir.path(), "a");
    let mut b = spawn(&instance("b"), dir.path(), "b");
    let mut c = spawn(&instance("c"), dir.path(), "c");
    until_each_owns_partitions(&["a", "b", "c"].map(|i| (log(i), 0)));

    let trips = PacedTrips::start(
        cfg.topics.verdicts.clone(),
        mailboxes.clone(),
        Duration::from_millis(75),
    );
    every_partition_blocks_from(&cfg, &mailboxes, 0, "three instances");
    b.kill().expect("kill -9");
    b.wait().unwrap();
    let killed_at = trips.sent();
    every_partition_blocks_from(&cfg, &mailboxes, killed_at, "after kill -9 of b");
    let log_b = std::fs::metadata(log("b")).map_or(0, |m| m.len() as usize);
    b = spawn(&instance("b"), dir.path(), "b");
    until_each_owns_partitions(&[(log("b"), log_b)]);
    let rejoined_at = trips.sent();
    every_partition_blocks_from(&cfg, &mailboxes, rejoined_at, "after b's restart");
    let n = trips.finish();
    assert!(
        n < mailboxes.len(),
        "the trips ran out before the test ended"
    );
    eprintln!("{n} trips; b killed after {killed_at}, back after {rejoined_at}");
    exactly_one_block_alert_and_scan_each(&cfg, &mailboxes[..n]);
    for i in [&mut a, &mut b, &mut c] {
        i.kill().unwrap();
        i.wait().unwrap();
    }
}

/// Blocks, alerts and scan requests: one of each per mailbox of `tripped`, decoded.
fn exactly_one_block_alert_and_scan_each(cfg: &mailguard::config::Config, tripped: &[String]) {
    let codec = Codec::default();
    let n = tripped.len();
    let t = Duration::from_secs(120);
    let decoded = |topic: &str, settle: Duration| -> Vec<Effect> {
        consume_exactly(topic, n, t, settle)
            .iter()
            .map(|r| codec.decode_effect(r.value.as_deref().unwrap()).unwrap())
            .collect()
    };
    let mut expected: Vec<String> = tripped.to_vec();
    expected.sort();
    let index = |mb: &str| {
        mb.trim_start_matches("three-")
            .trim_end_matches("@example.com")
            .to_string()
    };
    let mut blocked = Vec::new();
    for e in decoded(&cfg.topics.blocks, Duration::from_secs(3)) {
        let Effect::Block(b) = e else { panic!("{e:?}") };
        blocked.push(b.mailbox);
    }
    blocked.sort();
    assert_eq!(blocked, expected, "every mailbox blocked exactly once");
    let mut alerted = Vec::new();
    for e in decoded(&cfg.topics.alerts, Duration::from_secs(1)) {
        let Effect::Alert(a) = e else { panic!("{e:?}") };
        assert_eq!(
            a.owner_id,
            Some(format!("owner-{}", index(&a.mailbox))),
            "{a:?}"
        );
        alerted.push(a.mailbox);
    }
    alerted.sort();
    assert_eq!(alerted, expected, "every mailbox alerted exactly once");
    let mut scanned = Vec::new();
    for e in decoded(&cfg.topics.scan_requests, Duration::from_secs(1)) {
        let Effect::Scan(s) = e else { panic!("{e:?}") };
        let i = index(&s.mailbox);
        assert_eq!(
            (s.owner_id.as_str(), s.device_id.as_str()),
            (
                format!("owner-{i}").as_str(),
                format!("device-{i}").as_str()
            ),
            "{s:?}"
        );
        scanned.push(s.mailbox);
    }
    scanned.sort();
    assert_eq!(scanned, expected, "one scan request for every trip");
    consume_exactly(&cfg.topics.dlq, 0, t, Duration::from_millis(500));
}
