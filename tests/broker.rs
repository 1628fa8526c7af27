//! The broker of the test run is a real Kafka: records round-trip, transactions commit and abort
//! as Kafka's do, and librdkafka's murmur2 partitioner agrees with the Java client's.

mod common;

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use common::*;
use mailguard::kafka::partitioner::partition_for;

fn topic(partitions: i32) -> String {
    let (mut cfg, _dir) = test_config(partitions);
    // Reuse the creation path of mailguard itself, on a single fresh topic set.
    cfg.topics.create_missing = true;
    create_topics(&cfg);
    cfg.topics.verdicts
}

#[test]
fn records_round_trip_through_the_broker() {
    let t = topic(3);
    let sent: Vec<(Option<&str>, Option<Vec<u8>>)> = (0..20)
        .map(|i| {
            (
                Some(["a", "b", "c", "d"][i % 4]),
                Some(format!("v{i}").into_bytes()),
            )
        })
        .collect();
    produce(&t, &sent);
    let got = consume_exactly(&t, 20, Duration::from_secs(30), Duration::from_millis(300));
    let mut values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
    // Per key, order is preserved (same partition).
    let a: Vec<&Rec> = got
        .iter()
        .filter(|r| r.key.as_deref() == Some("a"))
        .collect();
    let a_vals: Vec<String> = a
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(a_vals, vec!["v0", "v4", "v8", "v12", "v16"]);
}

#[test]
fn murmur2_partitioner_matches_the_java_client() {
    let t = topic(7);
    let keys: Vec<String> = (0..50).map(|i| format!("user{i}@example.com")).collect();
    let records: Vec<(Option<&str>, Option<Vec<u8>>)> = keys
        .iter()
        .map(|k| (Some(k.as_str()), Some(vec![1])))
        .collect();
    produce(&t, &records);
    let got = consume_exactly(&t, 50, Duration::from_secs(30), Duration::from_millis(200));
    for r in got {
        let key = r.key.unwrap();
        assert_eq!(r.partition, partition_for(key.as_bytes(), 7), "key {key}");
    }
}

#[test]
fn transactions_commit_visibly_and_abort_invisibly() {
    let t = topic(1);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", unique("txn-test"))
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).unwrap();

    p.begin_transaction().unwrap();
    p.send(BaseRecord::<str, str>::to(&t).key("k").payload("aborted-1"))
        .map_err(|(e, _)| e)
        .unwrap();
    p.send(BaseRecord::<str, str>::to(&t).key("k").payload("aborted-2"))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    p.abort_transaction(Duration::from_secs(30)).unwrap();

    p.begin_transaction().unwrap();
    p.send(BaseRecord::<str, str>::to(&t).key("k").payload("committed"))
        .map_err(|(e, _)| e)
        .unwrap();
    p.commit_transaction(Duration::from_secs(30)).unwrap();

    let got = consume_exactly(&t, 1, Duration::from_secs(30), Duration::from_millis(500));
    assert_eq!(got[0].value.as_deref(), Some(&b"committed"[..]));
}
