//! Exactly once across `kill -9`: the real binary is killed at random points while verdicts flow,
//! restarted, killed again; afterwards every expected block, alert, scan request and event exists
//! exactly once, and nothing else does. The early warning is on (its SPEC default, threshold − 1):
//! each compromised mailbox is warned once, at its fourth message, whatever the kills.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use common::*;
use mailguard::codec::{Codec, OwnerDevices};
use mailguard::config::Config;
use mailguard::policy::{AlertKind, BlockState, Effect, EventKind, Owner, VerdictKind};

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let (mut cfg, dir) = test_config(3);
    cfg.kafka.commit_interval_ms = 100;
    cfg.log.filter = "info,rdkafka=warn".into();
    cfg.policy.warn_threshold = None;
    create_topics(&cfg);
    let config_path = dir.path().join("mailguard.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let log_path = dir.path().join("mailguard.log");
    let codec = Codec::default();
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // Directory: every compromised mailbox's owner has two devices.
    let compromised: Vec<String> = (0..24).map(|i| format!("bad{i}@corp.example")).collect();
    for (i, mb) in compromised.iter().enumerate() {
        let mut o = Vec::new();
        codec
            .encode_owner(
                mb,
                &Owner {
                    owner_id: format!("o{i}"),
                    tenant_id: "t".into(),
                    owner_name: None,
                },
                &mut o,
            )
            .unwrap();
        produce(&cfg.topics.mailboxes, &[(Some(mb), Some(o))]);
        let mut d = Vec::new();
        codec
            .encode_devices(
                &OwnerDevices {
                    owner_id: format!("o{i}"),
                    tenant_id: "t".into(),
                    device_ids: vec![format!("d{i}a"), format!("d{i}b")],
                },
                &mut d,
            )
            .unwrap();
        produce(&cfg.topics.devices, &[(Some(&format!("o{i}")), Some(d))]);
    }

    // The stream: clean traffic from 300 mailboxes, and each compromised mailbox sends 8
    // offending messages within the window (a warning at the fourth, one trip at the fifth; the
    // rest arrive while it is blocked). The kills fall between rounds, so between some
    // mailboxes' third, fourth and fifth message.
    let now = now_ms();
    let mut stream: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seq = 0;
    for round in 0..8 {
        for _ in 0..400 {
            let mb = format!("ok{}@corp.example", rng.random_range(0..300));
            let out = verdict_bytes("t", &mb, &format!("m{seq}"), now + seq, VerdictKind::Clean);
            seq += 1;
            stream.push((mb, out));
        }
        for mb in &compromised {
            let id = format!("{mb}-{round}");
            let out = verdict_bytes("t", mb, &id, now + round * 1_000, VerdictKind::Spam);
            stream.push((mb.clone(), out));
        }
    }

    let mut child = spawn_binary(&config_path, &log_path);
    let chunks: Vec<&[(String, Vec<u8>)]> = stream.chunks(stream.len() / 6 + 1).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce_keyed(&cfg.topics.verdicts, chunk);
        if i < chunks.len() - 1 {
            // A random kill point: during start-up, restore, processing or a commit.
            std::thread::sleep(Duration::from_millis(rng.random_range(50..2_500)));
            child.kill().expect("kill -9");
            child.wait().unwrap();
            child = spawn_binary(&config_path, &log_path);
        }
    }

    let n = compromised.len();
    let t = Duration::from_secs(120);
    let settle = Duration::from_secs(3);
    let blocks = consume_exactly(&cfg.topics.blocks, n, t, settle);
    let scans = consume_exactly(
        &cfg.topics.scan_requests,
        2 * n,
        t,
        Duration::from_millis(300),
    );
    let alerts = consume_exactly(&cfg.topics.alerts, 2 * n, t, Duration::from_millis(300));
    let events = consume_exactly(&cfg.topics.events, 6 * n, t, Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let mut per_mailbox: BTreeMap<String, usize> = BTreeMap::new();
    for r in &blocks {
        match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
            Effect::Block(b) => {
                assert_eq!(b.state, BlockState::Blocked);
                assert_eq!(b.strike, 1);
                *per_mailbox.entry(b.mailbox).or_default() += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let expected: BTreeMap<String, usize> = compromised.iter().map(|m| (m.clone(), 1)).collect();
    assert_eq!(per_mailbox, expected);
    let scan_ids: HashSet<String> = scans
        .iter()
        .map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                Effect::Scan(s) => s.request_id,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(scan_ids.len(), 2 * n, "scan request ids are unique");
    let event_ids: HashSet<String> = events
        .iter()
        .map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                Effect::Event(e) => e.event_id,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(event_ids.len(), 6 * n, "event ids are unique");
    // Per mailbox: one WARNING and one BLOCK alert; one MAILBOX_WARNED event.
    let mut kinds: BTreeMap<String, Vec<AlertKind>> = BTreeMap::new();
    for r in &alerts {
        match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
            Effect::Alert(a) => kinds.entry(a.mailbox).or_default().push(a.kind),
            other => panic!("{other:?}"),
        }
    }
    let expected: BTreeMap<String, Vec<AlertKind>> = compromised
        .iter()
        .map(|m| (m.clone(), vec![AlertKind::Warning, AlertKind::Block]))
        .collect();
    assert_eq!(kinds, expected);
    let warned: BTreeMap<String, usize> = events
        .iter()
        .filter_map(
            |r| match codec.decode_effect(r.value.as_deref().unwrap()).unwrap() {
                Effect::Event(e) if e.kind == EventKind::MailboxWarned => Some(e.mailbox),
                _ => None,
            },
        )
        .fold(BTreeMap::new(), |mut m, mb| {
            *m.entry(mb).or_default() += 1;
            m
        });
    let once: BTreeMap<String, usize> = compromised.iter().map(|m| (m.clone(), 1)).collect();
    assert_eq!(warned, once, "one warning per mailbox");
    let _keep: &Config = &cfg;
}
