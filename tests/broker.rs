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

/// Which partitions of each co-partitioned input topic a member owns.
type Owned = [std::collections::BTreeSet<i32>; 3];

fn owned(c: &rdkafka::consumer::BaseConsumer, topics: &[String; 3]) -> Owned {
    use rdkafka::consumer::Consumer;
    let a = c.assignment().unwrap_or_default();
    topics.clone().map(|t| {
        a.elements()
            .iter()
            .filter(|e| e.topic() == t)
            .map(|e| e.partition())
            .collect()
    })
}

/// Three members of one group, built as mailguard builds its group consumer, polled until
/// every partition is owned by one of them and nothing has moved for three seconds (KIP-848
/// hands partitions over in steps); returns what each owns.
fn settled_assignment(kafka: &mailguard::config::KafkaConfig, topics: &[String; 3]) -> Vec<Owned> {
    use rdkafka::consumer::Consumer;
    let members: Vec<rdkafka::consumer::BaseConsumer> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let mut k = kafka.clone();
            k.instance_id = id.to_string();
            let c: rdkafka::consumer::BaseConsumer = mailguard::kafka::client::group_consumer(&k)
                .create()
                .unwrap();
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            c.subscribe(&names).unwrap();
            c
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (mut last, mut since) = (Vec::new(), std::time::Instant::now());
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no settled assignment: {last:?}"
        );
        for m in &members {
            let _ = m.poll(Duration::from_millis(50));
        }
        let now: Vec<Owned> = members.iter().map(|m| owned(m, topics)).collect();
        let complete = (0..3).all(|t| now.iter().map(|o| o[t].len()).sum::<usize>() == 4)
            && now.iter().all(|o| !o[0].is_empty());
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        } else if complete && since.elapsed() > Duration::from_secs(3) {
            return last;
        }
    }
}

/// The pipeline relies on partition p of verdicts, commands and routed scan results going to
/// one member (their state lives with the verdicts' partition): the range assignment of both
/// group protocols, the classic one in the client and KIP-848's on the broker, gives that.
#[test]
fn both_group_protocols_keep_partition_p_of_the_inputs_on_one_member() {
    use mailguard::config::GroupProtocol;
    for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
        let (mut cfg, _dir) = test_config(4);
        create_topics(&cfg);
        cfg.kafka.group_protocol = protocol;
        cfg.kafka.static_membership = false;
        let t = &cfg.topics;
        let topics = [
            t.verdicts.clone(),
            t.commands.clone(),
            t.scan_results_routed.clone(),
        ];
        let members = settled_assignment(&cfg.kafka, &topics);
        for (i, [verdicts, commands, routed]) in members.iter().enumerate() {
            assert_eq!(verdicts, commands, "{protocol:?} member {i}: {members:?}");
            assert_eq!(verdicts, routed, "{protocol:?} member {i}: {members:?}");
        }
        eprintln!(
            "{protocol:?}: verdict partitions by member {:?}",
            members.iter().map(|o| &o[0]).collect::<Vec<_>>()
        );
    }
}
