//! Restoring local state from the changelog, on the real broker: only committed writes are
//! restored, in order, tombstones delete, and a local copy that cannot be trusted is wiped.

mod common;

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use common::*;
use mailguard::kafka::partitioner::partition_for;
use mailguard::pipeline::restore::restore_partitions;
use mailguard::store::{Batch, Store};

const PARTITIONS: i32 = 2;
const T: Duration = Duration::from_secs(30);

fn txn_producer(id: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", id)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

/// One transaction of (mailbox, state bytes or tombstone) on the changelog; committed or aborted.
fn changelog_txn(p: &BaseProducer, topic: &str, writes: &[(&str, Option<&[u8]>)], commit: bool) {
    p.begin_transaction().unwrap();
    for (key, value) in writes {
        let mut r: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).key(*key);
        if let Some(v) = value {
            r = r.payload(*v);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    if commit {
        p.commit_transaction(T).unwrap();
    } else {
        p.flush(T).unwrap();
        p.abort_transaction(T).unwrap();
    }
}

fn state(store: &Store, mailbox: &str) -> Option<Vec<u8>> {
    store
        .get_state(partition_for(mailbox.as_bytes(), PARTITIONS), mailbox)
        .unwrap()
}

fn all() -> Vec<i32> {
    (0..PARTITIONS).collect()
}

#[test]
fn only_committed_changelog_writes_are_restored_and_the_latest_wins() {
    let (cfg, dir) = test_config(PARTITIONS);
    create_topics(&cfg);
    let topic = &cfg.topics.changelog;
    let p = txn_producer(&unique("restore-tx"));
    changelog_txn(
        &p,
        topic,
        &[("a@x.com", Some(b"a1")), ("b@x.com", Some(b"b1"))],
        true,
    );
    changelog_txn(&p, topic, &[("c@x.com", Some(b"aborted"))], false);
    changelog_txn(
        &p,
        topic,
        &[("a@x.com", Some(b"a2")), ("b@x.com", None)],
        true,
    );

    let store = Store::open(&dir.path().join("restored")).unwrap();
    let applied = restore_partitions(&cfg.kafka, &store, topic, &all(), T)
        .unwrap()
        .records;
    assert_eq!(applied, 4, "two committed transactions of two records each");
    assert_eq!(state(&store, "a@x.com").as_deref(), Some(&b"a2"[..]));
    assert_eq!(state(&store, "b@x.com"), None, "tombstone deletes");
    assert_eq!(state(&store, "c@x.com"), None, "aborted write not restored");

    // Restored to the end (past the transaction markers): nothing to do a second time.
    assert_eq!(
        restore_partitions(&cfg.kafka, &store, topic, &all(), T)
            .unwrap()
            .records,
        0
    );
    // New committed writes after that are picked up incrementally.
    changelog_txn(&p, topic, &[("a@x.com", Some(b"a3"))], true);
    assert_eq!(
        restore_partitions(&cfg.kafka, &store, topic, &all(), T)
            .unwrap()
            .records,
        1
    );
    assert_eq!(state(&store, "a@x.com").as_deref(), Some(&b"a3"[..]));
}

#[test]
fn a_local_copy_ahead_of_the_changelog_or_never_restored_is_wiped() {
    let (cfg, dir) = test_config(PARTITIONS);
    create_topics(&cfg);
    let topic = &cfg.topics.changelog;
    let p = txn_producer(&unique("restore-tx"));
    changelog_txn(&p, topic, &[("real@x.com", Some(b"r1"))], true);

    let store = Store::open(&dir.path().join("state")).unwrap();
    let real = partition_for(b"real@x.com", PARTITIONS);
    let other = 1 - real;
    // The real mailbox's partition claims a position far beyond the changelog's end (e.g. the
    // topic was recreated); the other partition holds state it never restored.
    let mut b = Batch::new();
    store.stage_state(&mut b, real, "ghost@x.com", Some(b"ghost"));
    store.stage_changelog_position(&mut b, real, 1_000_000);
    store.stage_state(&mut b, other, "stray@x.com", Some(b"stray"));
    store.write(b).unwrap();

    restore_partitions(&cfg.kafka, &store, topic, &all(), T).unwrap();
    assert_eq!(store.get_state(real, "ghost@x.com").unwrap(), None);
    assert_eq!(store.get_state(other, "stray@x.com").unwrap(), None);
    assert_eq!(state(&store, "real@x.com").as_deref(), Some(&b"r1"[..]));
    let pos = store.changelog_position(real).unwrap().unwrap();
    assert!(
        (2..1_000_000).contains(&pos),
        "position reset to the changelog's end (record + commit marker), got {pos}"
    );
}
