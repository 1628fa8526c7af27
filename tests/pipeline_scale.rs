//! Two instances in one consumer group: partitions and their state move on rebalance, and every
//! trip still yields exactly one block.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailguard::codec::Codec;
use mailguard::policy::{Effect, VerdictKind};
use mailguard::timers::SystemClock;

fn offending(mailbox: &str, id: &str, sent_at: i64) -> Vec<u8> {
    verdict_bytes("t", mailbox, id, sent_at, VerdictKind::Spam)
}

#[test]
fn state_follows_partitions_across_a_rebalance() {
    let (cfg, _dir_a) = test_config(4);
    create_topics(&cfg);
    let codec = Codec::default();
    let now = now_ms();
    let mailboxes: Vec<String> = (0..20).map(|i| format!("m{i}@scale.example")).collect();

    // Instance A alone counts the first three offending messages of every mailbox.
    let a = start(&cfg, Arc::new(SystemClock));
    a.wait_ready(Duration::from_secs(60));
    let first: Vec<(Option<&str>, Option<Vec<u8>>)> = mailboxes
        .iter()
        .flat_map(|m| (0..3).map(move |k| (m, k)))
        .map(|(m, k)| {
            (
                Some(m.as_str()),
                Some(offending(m, &format!("{m}-{k}"), now + k)),
            )
        })
        .collect();
    produce(&cfg.topics.verdicts, &first);
    // Wait until A has committed all of it (its state changes are on the changelog).
    consume_until(&cfg.topics.changelog, Duration::from_secs(60), |r| {
        let mut keys: Vec<&str> = r.iter().filter_map(|x| x.key.as_deref()).collect();
        keys.sort();
        keys.dedup();
        keys.len() >= mailboxes.len()
    });

    // Instance B joins with its own state directory and instance id: some partitions move to it
    // and must be restored from the changelog before B counts the last two messages.
    let (mut cfg_b, _dir_b) = test_config(4);
    cfg_b.topics = cfg.topics.clone();
    cfg_b.kafka.group_id = cfg.kafka.group_id.clone();
    cfg_b.kafka.transactional_id_prefix = cfg.kafka.transactional_id_prefix.clone();
    cfg_b.kafka.instance_id = "1".into();
    let b = start(&cfg_b, Arc::new(SystemClock));
    b.wait_ready(Duration::from_secs(60));
    let rest: Vec<(Option<&str>, Option<Vec<u8>>)> = mailboxes
        .iter()
        .flat_map(|m| (3..5).map(move |k| (m, k)))
        .map(|(m, k)| {
            (
                Some(m.as_str()),
                Some(offending(m, &format!("{m}-{k}"), now + k)),
            )
        })
        .collect();
    produce(&cfg.topics.verdicts, &rest);

    let blocks = consume_exactly(
        &cfg.topics.blocks,
        mailboxes.len(),
        Duration::from_secs(90),
        Duration::from_secs(2),
    );
    let mut blocked: Vec<String> = blocks
        .iter()
        .map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                Effect::Block(b) => {
                    assert_eq!(b.evidence_message_ids.len(), 5);
                    b.mailbox
                }
                other => panic!("{other:?}"),
            },
        )
        .collect();
    blocked.sort();
    let mut expected = mailboxes.clone();
    expected.sort();
    assert_eq!(blocked, expected);
    let (ra, rb) = (a.metrics.render(), b.metrics.render());
    assert!(
        rb.contains("mailguard_trips_total") && !rb.contains("mailguard_trips_total 0"),
        "B tripped some mailboxes:\n{rb}"
    );
    // Both own a share of the partitions (the gauge is always rendered: read its value).
    let assigned = |r: &str| -> i64 {
        r.lines()
            .find_map(|l| {
                l.strip_prefix("mailguard_assigned_partitions ")?
                    .parse()
                    .ok()
            })
            .expect("gauge rendered")
    };
    assert!(assigned(&ra) >= 1 && assigned(&rb) >= 1, "{ra}\n{rb}");
    b.stop().unwrap();
    a.stop().unwrap();
}
