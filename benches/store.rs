//! RocksDB state read-modify-write, as the pipeline does it for an offending verdict: point get
//! of the encoded state, decode, step, encode, batched write after commit.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mailguard::policy::{self, Directory, Input, MailboxState, Policy, Verdict, VerdictKind};
use mailguard::store::{Batch, Store};

#[allow(dead_code)]
#[path = "../tests/common/builders.rs"]
mod builders;
use builders::NoDirectory;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let policy = Policy::default();
    let mailboxes: Vec<String> = (0..100_000)
        .map(|i| format!("user{i}@tenant{}.example", i % 50))
        .collect();
    // Pre-populate: every mailbox has one offending message in its window.
    let mut batch = Batch::new();
    let mut buf = Vec::new();
    for (i, m) in mailboxes.iter().enumerate() {
        let mut s = MailboxState::default();
        let v = Verdict {
            message_id: format!("seed{i}"),
            tenant_id: "t".into(),
            mailbox: m.clone(),
            sent_at: 1_000,
            verdict: VerdictKind::Spam,
        };
        policy::step(&mut s, &Input::Verdict(v), 1_000, &NoDirectory, &policy);
        buf.clear();
        s.encode(&mut buf);
        store.stage_state(&mut batch, (i % 8) as i32, m, Some(&buf));
    }
    store.write(batch).unwrap();

    let mut group = c.benchmark_group("store");
    const N: usize = 1_000;
    group.throughput(Throughput::Elements(N as u64));
    let mut round = 0u64;
    group.bench_function("read_modify_write_1000_offending", |b| {
        b.iter_batched(
            || {
                round += 1;
                round
            },
            |round| {
                let mut batch = Batch::new();
                let mut buf = Vec::with_capacity(256);
                for k in 0..N {
                    let i = (k * 97 + round as usize * 1_009) % mailboxes.len();
                    let m = &mailboxes[i];
                    let p = (i % 8) as i32;
                    let mut s = match store.get_state(p, m).unwrap() {
                        Some(bytes) => MailboxState::decode(&bytes).unwrap(),
                        None => MailboxState::default(),
                    };
                    let v = Verdict {
                        message_id: format!("r{round}-{k}"),
                        tenant_id: "t".into(),
                        mailbox: m.clone(),
                        sent_at: 1_000 + round as i64 * 700_000,
                        verdict: VerdictKind::Spam,
                    };
                    black_box(policy::step(
                        &mut s,
                        &Input::Verdict(v),
                        1_000 + round as i64 * 700_000,
                        &NoDirectory,
                        &policy,
                    ));
                    buf.clear();
                    s.encode(&mut buf);
                    store.stage_state(&mut batch, p, m, Some(&buf));
                }
                store.write(batch).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// What a rebalance costs per state: `Processor::assign` decodes every stored state of the
/// partition (inside the rebalance callback) to rebuild its timers. 100 000 states of which 90 %
/// are idle (one offending message, a day ago), before and after the idle-state sweep.
fn restore(c: &mut Criterion) {
    use mailguard::codec::Codec;
    use mailguard::config::TopicsConfig;
    use mailguard::pipeline::directory::TableDirectory;
    use mailguard::pipeline::processor::Processor;
    use mailguard::pipeline::sink::VecSink;
    use mailguard::policy::Limits;
    use mailguard::telemetry::Metrics;
    use std::collections::HashMap;
    use std::sync::{Arc, RwLock};

    const STATES: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let policy = Policy::default();
    let mut batch = Batch::new();
    let mut buf = Vec::new();
    for i in 0..STATES {
        let m = format!("user{i}@tenant{}.example", i % 50);
        let mut s = MailboxState::default();
        // Every tenth mailbox tripped once (a strike: kept for good), the rest sent one spam.
        let sends = if i % 10 == 0 { 5 } else { 1 };
        for k in 0..sends {
            let v = Verdict {
                message_id: format!("seed{i}-{k}"),
                tenant_id: "t".into(),
                mailbox: m.clone(),
                sent_at: 1_000 + k,
                verdict: VerdictKind::Spam,
            };
            policy::step(&mut s, &Input::Verdict(v), 1_000, &NoDirectory, &policy);
        }
        buf.clear();
        s.encode(&mut buf);
        store.stage_state(&mut batch, 0, &m, Some(&buf));
    }
    store.write(batch).unwrap();
    let processor = |store: &Store| {
        let codec = Codec::default();
        let directory = TableDirectory::new(
            store.clone(),
            codec.clone(),
            Arc::new(RwLock::new(HashMap::new())),
            NoDirectory.tenant(""),
        );
        Processor::new(
            codec,
            policy.clone(),
            Limits::default(),
            directory,
            store.clone(),
            Metrics::new(),
            TopicsConfig::default(),
        )
    };
    // The sweep, a day and a bit later (the blocks have ended by then too). What it leaves is
    // what a new owner restores from the compacted changelog: copied into a fresh store.
    let later = 1_000 + policy.state_idle_ttl_ms + 1;
    let mut p = processor(&store);
    p.assign(0).unwrap();
    let (forgotten, done) = p.sweep(later, usize::MAX).unwrap();
    assert!(done && forgotten == STATES * 9 / 10, "{forgotten}");
    let mut sink = VecSink::default();
    p.prepare_commit(later, &mut sink).unwrap();
    let gone: std::collections::HashSet<Vec<u8>> =
        sink.records.into_iter().map(|r| r.key).collect();
    let dir_after = tempfile::tempdir().unwrap();
    let after = Store::open(dir_after.path()).unwrap();
    let mut batch = Batch::new();
    store
        .for_each_state(0, |m, v| {
            if !gone.contains(m.as_bytes()) {
                after.stage_state(&mut batch, 0, m, Some(v));
            }
            Ok(())
        })
        .unwrap();
    after.write(batch).unwrap();

    let mut group = c.benchmark_group("restore");
    group.sample_size(10);
    for (name, store) in [
        ("assign_100k_states_before_sweep", &store),
        ("assign_10k_states_after_sweep", &after),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || processor(store),
                |mut p| {
                    p.assign(0).unwrap();
                    black_box(p.next_deadline())
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench, restore);
criterion_main!(benches);
