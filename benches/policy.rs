//! Throughput of the policy core alone (no codec, no Kafka, no store) over a realistic mix:
//! 100 000 mailboxes over 2 h of traffic, ~1 % of them compromised and bursting spam, the rest
//! mostly CLEAN with occasional SPAM; verdicts in time order; states in a `HashMap` the way the
//! pipeline's cache holds them (a state is inserted only when `step` changed it).
//!
//! `cargo bench --bench policy` reports verdicts/s (criterion "elements"), without and with a
//! shadow policy (issue 23: a candidate of threshold 3 beside the default live policy) on the
//! same inputs, so the cost of the shadow is read off one run.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mailguard::policy::{
    step, Directory, Input, MailboxState, Millis, Outcome, Owner, Policy, PolicyOverrides,
    TenantSettings, Verdict, VerdictKind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::hint::black_box;

const MAILBOXES: usize = 100_000;
const TENANTS: usize = 1_000;
const COMPROMISED_PER_MILLE: usize = 10;
const T0: Millis = 1_700_000_000_000;
const SPAN: Millis = 2 * 3_600_000;

struct Dir {
    owners: HashMap<String, Owner>,
    devices: HashMap<String, Vec<String>>,
    tenants: HashMap<String, TenantSettings>,
}

impl Directory for Dir {
    fn owner(&self, mailbox: &str) -> Option<Owner> {
        self.owners.get(mailbox).cloned()
    }
    fn devices(&self, owner_id: &str) -> Option<Vec<String>> {
        self.devices.get(owner_id).cloned()
    }
    fn tenant(&self, tenant_id: &str) -> TenantSettings {
        self.tenants
            .get(tenant_id)
            .cloned()
            .unwrap_or(TenantSettings {
                mode: Default::default(),
                sync_security_enabled: true,
                endpoint_licence: true,
                overrides: PolicyOverrides::default(),
                shadow: None,
            })
    }
}

fn mailbox(i: usize) -> String {
    format!("user{i}@tenant{}.example.com", i % TENANTS)
}

fn tenant(i: usize) -> String {
    format!("tenant-{}", i % TENANTS)
}

/// (inputs in time order with their processor time, directory)
fn workload() -> (Vec<(Millis, Input)>, Dir) {
    let mut rng = StdRng::seed_from_u64(42);
    let mut dir = Dir {
        owners: HashMap::new(),
        devices: HashMap::new(),
        tenants: HashMap::new(),
    };
    for t in (0..TENANTS).step_by(10) {
        dir.tenants.insert(
            format!("tenant-{t}"),
            TenantSettings {
                mode: Default::default(),
                sync_security_enabled: false,
                endpoint_licence: true,
                overrides: PolicyOverrides::default(),
                shadow: None,
            },
        );
    }
    for i in 0..MAILBOXES {
        if i % 50 == 7 {
            continue; // owner unknown
        }
        let owner = format!("owner-{i}");
        let n = rng.random_range(0..4);
        dir.devices.insert(
            owner.clone(),
            (0..n).map(|d| format!("device-{i}-{d}")).collect(),
        );
        dir.owners.insert(
            mailbox(i),
            Owner {
                owner_id: owner,
                tenant_id: tenant(i),
                owner_name: None,
            },
        );
    }
    // (sent_at, mailbox index, kind)
    let mut events: Vec<(Millis, usize, VerdictKind)> = Vec::new();
    for i in 0..MAILBOXES {
        // Ordinary traffic: ~10 messages in 2 h, 2 % spam.
        for _ in 0..rng.random_range(5..15) {
            let kind = if rng.random_bool(0.02) {
                VerdictKind::Spam
            } else {
                VerdictKind::Clean
            };
            events.push((T0 + rng.random_range(0..SPAN), i, kind));
        }
        // Compromised: bursts of 20–60 spam/virus within a few minutes, a few times.
        if i % 1_000 < COMPROMISED_PER_MILLE {
            for _ in 0..rng.random_range(1..4) {
                let start = T0 + rng.random_range(0..SPAN - 600_000);
                for _ in 0..rng.random_range(20..60) {
                    let kind = if rng.random_bool(0.1) {
                        VerdictKind::Virus
                    } else {
                        VerdictKind::Spam
                    };
                    events.push((start + rng.random_range(0..300_000), i, kind));
                }
            }
        }
    }
    events.sort_by_key(|e| e.0);
    let mailboxes: Vec<String> = (0..MAILBOXES).map(mailbox).collect();
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant-{t}")).collect();
    let inputs = events
        .into_iter()
        .enumerate()
        .map(|(n, (sent_at, i, kind))| {
            // Processed 20–200 ms after it was sent.
            let now = sent_at + 20 + (n as Millis * 7919) % 180;
            (
                now,
                Input::Verdict(Verdict {
                    message_id: format!("<{n:x}@gw>"),
                    tenant_id: tenants[i % TENANTS].clone(),
                    mailbox: mailboxes[i].clone(),
                    sent_at,
                    verdict: kind,
                }),
            )
        })
        .collect();
    (inputs, dir)
}

fn run(
    inputs: &[(Millis, Input)],
    dir: &Dir,
    policy: &Policy,
    states: &mut HashMap<String, MailboxState>,
) -> usize {
    let mut effects = 0;
    for (now, input) in inputs {
        let Input::Verdict(v) = input else { continue };
        let r = match states.get_mut(v.mailbox.as_str()) {
            Some(s) => step(s, input, *now, dir, policy),
            None => {
                let mut s = MailboxState::default();
                let r = step(&mut s, input, *now, dir, policy);
                if r.state_changed {
                    states.insert(v.mailbox.clone(), s);
                }
                r
            }
        };
        effects += r.effects.len();
        black_box(&r);
    }
    effects
}

/// The default policy with a shadow of threshold 3 and a 30-minute window beside it.
fn shadowed() -> Policy {
    let live = Policy::default();
    Policy {
        shadow: Some(std::sync::Arc::new(Policy {
            threshold: 3,
            window_ms: 1_800_000,
            ..live.clone()
        })),
        ..live
    }
}

fn bench(c: &mut Criterion) {
    let (inputs, dir) = workload();
    let policy = Policy::default();
    let with_shadow = shadowed();
    // Describe the mix once (with the shadow: its trips are counted too).
    {
        let policy = &with_shadow;
        let mut states = HashMap::new();
        let mut trips = 0;
        let mut shadow_trips = 0;
        let mut offending = 0;
        for (now, input) in &inputs {
            let Input::Verdict(v) = input else { continue };
            offending += usize::from(v.verdict.is_offending());
            let s = states.entry(v.mailbox.clone()).or_default();
            let r = step(s, input, *now, &dir, policy);
            for o in &r.outcomes {
                match o {
                    Outcome::Tripped { .. } => trips += 1,
                    Outcome::ShadowTrip { .. } => shadow_trips += 1,
                    _ => {}
                }
            }
        }
        let bytes: usize = states
            .values()
            .filter(|s: &&MailboxState| !s.is_forgettable(T0 + SPAN, policy))
            .map(|s| s.to_bytes().len())
            .sum();
        eprintln!(
            "workload: {} verdicts, {} offending, {} mailboxes, {} trips, {} shadow trips, {} B of encoded state kept (with the shadow)",
            inputs.len(),
            offending,
            MAILBOXES,
            trips,
            shadow_trips,
            bytes
        );
    }
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.sample_size(10);
    for (name, policy) in [
        ("step_realistic_mix", &policy),
        ("step_realistic_mix_with_shadow", &with_shadow),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || HashMap::with_capacity(MAILBOXES / 8),
                |mut states| {
                    black_box(run(&inputs, &dir, policy, &mut states));
                    states
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
