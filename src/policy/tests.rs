//! The rule table: every rule of SPEC §1 / §4 and every boundary, against `step`.

use super::*;
use std::cell::Cell;
use std::collections::HashMap;

const T0: Millis = 1_700_000_000_000;
const H: Millis = 3_600_000;
const MB: &str = "alice@example.test";
const TENANT: &str = "t1";

#[derive(Default)]
struct Dir {
    owners: HashMap<String, Owner>,
    devices: HashMap<String, Vec<String>>,
    tenants: HashMap<String, TenantSettings>,
    lookups: Cell<u32>,
    /// The exemptions table, by `tenant/pattern`.
    exemptions: HashMap<String, Exemption>,
    /// Whether every tenant is at its exemption bound.
    exemptions_full: bool,
}

impl Dir {
    fn standard() -> Dir {
        let mut d = Dir::default();
        d.owners.insert(
            MB.into(),
            Owner {
                owner_id: "u1".into(),
                tenant_id: TENANT.into(),
                owner_name: Some("Alice".into()),
            },
        );
        d.devices
            .insert("u1".into(), vec!["d1".into(), "d2".into(), "d1".into()]);
        d
    }
    fn tenant_with(mut self, f: impl FnOnce(&mut TenantSettings)) -> Dir {
        let mut t = default_tenant();
        f(&mut t);
        self.tenants.insert(TENANT.into(), t);
        self
    }
}

fn default_tenant() -> TenantSettings {
    TenantSettings {
        mode: Default::default(),
        sync_security_enabled: true,
        endpoint_licence: true,
        overrides: PolicyOverrides::default(),
        shadow: None,
    }
}

impl Directory for Dir {
    fn owner(&self, mailbox: &str) -> Option<Owner> {
        self.lookups.set(self.lookups.get() + 1);
        self.owners.get(mailbox).cloned()
    }
    fn devices(&self, owner_id: &str) -> Option<Vec<String>> {
        self.lookups.set(self.lookups.get() + 1);
        self.devices.get(owner_id).cloned()
    }
    fn tenant(&self, tenant_id: &str) -> TenantSettings {
        self.lookups.set(self.lookups.get() + 1);
        self.tenants
            .get(tenant_id)
            .cloned()
            .unwrap_or_else(default_tenant)
    }
    fn exemption(&self, tenant_id: &str, pattern: &str) -> Option<Exemption> {
        self.exemptions
            .get(&Exemption::table_key(tenant_id, pattern))
            .cloned()
    }
    fn exemptions_full(&self, _tenant_id: &str) -> bool {
        self.exemptions_full
    }
}

fn verdict(id: &str, sent_at: Millis, kind: VerdictKind) -> Input {
    Input::Verdict(Verdict {
        message_id: id.into(),
        tenant_id: TENANT.into(),
        mailbox: MB.into(),
        sent_at,
        verdict: kind,
    })
}

fn spam(id: &str, sent_at: Millis) -> Input {
    verdict(id, sent_at, VerdictKind::Spam)
}

fn tick() -> Input {
    Input::Tick { mailbox: MB.into() }
}

fn command(id: &str, kind: CommandKind, role: ActorRole) -> Input {
    Input::Command(Command {
        command_id: id.into(),
        mailbox: MB.into(),
        tenant_id: TENANT.into(),
        kind,
        actor: "bob".into(),
        actor_role: role,
        ticket: "TCK-1".into(),
        issued_at: T0,
        reason: None,
        expires_at: None,
    })
}

struct Rig {
    state: MailboxState,
    dir: Dir,
    policy: Policy,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(Dir::standard(), Policy::default())
    }
    /// The rule table's rigs have the early warning off unless the test sets
    /// `warn_threshold` (the warning has its own tests below).
    fn with(dir: Dir, policy: Policy) -> Rig {
        Rig {
            state: MailboxState::default(),
            dir,
            policy: Policy {
                warn_threshold: policy.warn_threshold.or(Some(0)),
                ..policy
            },
        }
    }
    fn at(&mut self, now: Millis, input: Input) -> StepResult {
        let r = step(&mut self.state, &input, now, &self.dir, &self.policy);
        // Every state survives its encoding.
        assert_eq!(
            MailboxState::decode(&self.state.to_bytes()).as_ref(),
            Ok(&self.state)
        );
        r
    }
    /// Offending verdicts at the given times, processed at the time they were sent.
    fn burst(&mut self, prefix: &str, times: &[Millis]) -> Vec<Outcome> {
        times
            .iter()
            .enumerate()
            .flat_map(|(n, &t)| self.at(t, spam(&format!("{prefix}{n}"), t)).outcomes)
            .collect()
    }
    /// Five messages sent from `t` on, one second apart; returns the last result.
    fn trip_at(&mut self, prefix: &str, t: Millis) -> StepResult {
        for n in 0..4 {
            let s = t + n * 1_000;
            let r = self.at(s, spam(&format!("{prefix}{n}"), s));
            assert_eq!(r.outcomes.last(), Some(&Outcome::Counted), "{r:?}");
        }
        self.at(t + 4_000, spam(&format!("{prefix}4"), t + 4_000))
    }
}

fn tripped(strike: u32, permanent: bool) -> Outcome {
    Outcome::Tripped { strike, permanent }
}

fn blocks(r: &StepResult) -> Vec<&BlockRecord> {
    r.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Block(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn events(r: &StepResult) -> Vec<(EventKind, &str)> {
    r.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(e) => Some((e.kind, e.detail.as_str())),
            _ => None,
        })
        .collect()
}

fn alert(r: &StepResult) -> &Alert {
    r.effects
        .iter()
        .find_map(|e| match e {
            Effect::Alert(a) => Some(a),
            _ => None,
        })
        .expect("an alert")
}

use Outcome::{Counted, Duplicate, IgnoredWhileBlocked, Late, NotOffending};

#[test]
fn four_offending_never_trip() {
    let mut rig = Rig::new();
    assert_eq!(rig.burst("m", &[T0, T0 + 1, T0 + 2, T0 + 3]), [Counted; 4]);
    assert_eq!(rig.state.strikes(), 0);
    assert_eq!(rig.state.window().len(), 4);
}

#[test]
fn five_within_600_000_ms_trip() {
    let mut rig = Rig::new();
    let out = rig.burst("m", &[T0, T0 + 10, T0 + 20, T0 + 30, T0 + 600_000]);
    assert_eq!(out[..4], [Counted; 4]);
    assert_eq!(out[4], tripped(1, false));
    let b = rig.state.block().unwrap();
    assert_eq!(b.blocked_at, T0 + 600_000);
    assert_eq!(b.blocked_until, Some(T0 + 600_000 + H));
    assert_eq!(b.evidence_message_ids, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(rig.state.window().is_empty());
    assert_eq!(rig.state.next_deadline(), Some(T0 + 600_000 + H));
}

#[test]
fn five_over_600_001_ms_do_not_trip() {
    let mut rig = Rig::new();
    let out = rig.burst("m", &[T0, T0 + 10, T0 + 20, T0 + 30, T0 + 600_001]);
    assert_eq!(out, [Counted; 5]);
    assert_eq!(rig.state.block(), None);
    // The sliding window moves on: one more within 600 000 of the second trips.
    let out = rig.burst("n", &[T0 + 600_010]);
    assert_eq!(out, [tripped(1, false)]);
    assert_eq!(
        rig.state.block().unwrap().evidence_message_ids,
        ["m1", "m2", "m3", "m4", "n0"]
    );
}

#[test]
fn clean_never_counts_and_costs_nothing() {
    let mut rig = Rig::new();
    for n in 0..20 {
        let r = rig.at(
            T0 + n,
            verdict(&format!("c{n}"), T0 + n, VerdictKind::Clean),
        );
        assert_eq!(r.outcomes, [NotOffending]);
        assert!(r.effects.is_empty() && !r.state_changed && !r.clamped);
    }
    assert_eq!(rig.state, MailboxState::default());
    assert_eq!(rig.dir.lookups.get(), 0);
    // CLEAN interleaved with offending does not help them trip.
    let out = rig.burst("m", &[T0, T0 + 1, T0 + 2, T0 + 3]);
    assert_eq!(out, [Counted; 4]);
    let r = rig.at(T0 + 5, verdict("c", T0 + 5, VerdictKind::Clean));
    assert_eq!(r.outcomes, [NotOffending]);
    assert_eq!(rig.state.block(), None);
}

#[test]
fn virus_counts() {
    let mut rig = Rig::new();
    let out: Vec<Outcome> = (0..5)
        .flat_map(|n| {
            rig.at(
                T0 + n,
                verdict(&format!("v{n}"), T0 + n, VerdictKind::Virus),
            )
            .outcomes
        })
        .collect();
    assert_eq!(out.last(), Some(&tripped(1, false)));
}

#[test]
fn duplicate_id_does_not_count() {
    let mut rig = Rig::new();
    rig.burst("m", &[T0, T0 + 1, T0 + 2, T0 + 3]);
    let r = rig.at(T0 + 4, spam("m1", T0 + 1));
    assert_eq!(r.outcomes, [Duplicate]);
    assert!(!r.state_changed);
    // Same id with another sent_at is still a duplicate.
    assert_eq!(rig.at(T0 + 5, spam("m2", T0 + 5)).outcomes, [Duplicate]);
    assert_eq!(rig.state.block(), None);
    assert_eq!(
        rig.at(T0 + 6, spam("new", T0 + 6)).outcomes,
        [tripped(1, false)]
    );
}

#[test]
fn offending_during_a_block_never_counts() {
    let mut rig = Rig::new();
    rig.trip_at("a", T0);
    let until = T0 + 4_000 + H;
    // Plenty of spam during the block, sent before blocked_until.
    for n in 0..10 {
        let t = T0 + 10_000 + n * 60_000;
        let r = rig.at(t, spam(&format!("b{n}"), t));
        assert_eq!(r.outcomes, [IgnoredWhileBlocked]);
        assert!(r.effects.is_empty() && !r.state_changed);
    }
    // After expiry, a late arrival sent before blocked_until still does not count.
    let r = rig.at(until + 10, spam("late", until - 1));
    assert_eq!(r.outcomes, [Outcome::Unblocked, IgnoredWhileBlocked]);
    assert!(rig.state.window().is_empty());
    // Sent at blocked_until counts afresh.
    assert_eq!(rig.at(until + 20, spam("c0", until)).outcomes, [Counted]);
    assert_eq!(rig.state.strikes(), 1);
}

#[test]
fn ladder_1_2_4_8_16_hours_then_permanent_at_6() {
    // No devices: no incident waits for scan results, so the ticks only end blocks.
    let mut rig = Rig::with(Dir::default(), Policy::default());
    let mut t = T0;
    for k in 1..=5u32 {
        let r = rig.trip_at(&format!("k{k}-"), t);
        assert_eq!(r.outcomes, [tripped(k, false)]);
        let b = blocks(&r)[0];
        assert_eq!(b.state, BlockState::Blocked);
        assert_eq!(b.strike, k);
        let until = t + 4_000 + H * (1 << (k - 1));
        assert_eq!(b.blocked_until, Some(until));
        assert_eq!(alert(&r).blocked_until, Some(until));
        // Expire by tick.
        let r = rig.at(until, tick());
        assert_eq!(r.outcomes, [Outcome::Unblocked]);
        t = until;
    }
    let r = rig.trip_at("k6-", t);
    assert_eq!(r.outcomes, [tripped(6, true)]);
    let b = blocks(&r)[0];
    assert_eq!(
        (b.state, b.blocked_until),
        (BlockState::PermanentlyBlocked, None)
    );
    assert_eq!(events(&r)[0].0, EventKind::MailboxPermanentlyBlocked);
    assert_eq!(rig.state.next_deadline(), None);
    // Permanent: nothing counts, ticks are idle, forever.
    let far = t + 1_000 * H;
    assert_eq!(rig.at(far, spam("x", far)).outcomes, [IgnoredWhileBlocked]);
    assert_eq!(rig.at(far, tick()).outcomes, [Outcome::Idle]);
}

#[test]
fn expiry_exactly_at_blocked_until_not_one_ms_before() {
    let mut rig = Rig::new();
    let r = rig.trip_at("a", T0);
    let b = blocks(&r)[0].clone();
    let until = b.blocked_until.unwrap();
    let before = rig.state.clone();
    let r = rig.at(until - 1, tick());
    assert_eq!(r.outcomes, [Outcome::Idle]);
    assert!(r.effects.is_empty() && !r.state_changed);
    assert_eq!(rig.state, before);
    let r = rig.at(until, tick());
    assert_eq!(r.outcomes, [Outcome::Unblocked]);
    assert!(r.state_changed);
    let inc = b.incident_id.clone();
    assert_eq!(
        r.effects,
        vec![
            Effect::Block(BlockRecord {
                state: BlockState::Unblocked,
                updated_at: until,
                ..b
            }),
            Effect::Event(EventLogEntry {
                event_id: ids::event_id(MB, &inc, EventKind::MailboxUnblocked, "").to_string(),
                incident_id: Some(inc),
                tenant_id: TENANT.into(),
                mailbox: MB.into(),
                kind: EventKind::MailboxUnblocked,
                at: until,
                detail: text::unblocked_detail(1, until),
                reason: None,
                trip: None,
            }),
        ]
    );
    // A second tick is idle.
    assert_eq!(rig.at(until + 1, tick()).outcomes, [Outcome::Idle]);
}

#[test]
fn lazy_expiry_by_any_input() {
    let mut rig = Rig::new();
    rig.trip_at("a", T0);
    let until = rig.state.blocked_until().unwrap();
    let r = rig.at(until, verdict("c", until, VerdictKind::Clean));
    assert_eq!(r.outcomes, [Outcome::Unblocked, NotOffending]);
    assert_eq!(r.effects.len(), 2);
    assert_eq!(rig.state.block(), None);
}

#[test]
fn late_but_allowed_counts_too_late_dropped() {
    let mut rig = Rig::new();
    let w = T0 + 1_000_000;
    assert_eq!(rig.at(w, spam("newest", w)).outcomes, [Counted]);
    // Exactly at the lateness bound: counted.
    assert_eq!(rig.at(w + 1, spam("ok", w - 300_000)).outcomes, [Counted]);
    // One ms older: late.
    let r = rig.at(w + 2, spam("late", w - 300_001));
    assert_eq!(r.outcomes, [Late]);
    assert!(!r.state_changed);
    // Out-of-order arrival trips as if in order; blocked_at is the largest sent_at.
    let mut rig = Rig::new();
    let times = [T0 + 50, T0 + 10, T0 + 40, T0 + 20, T0 + 30];
    let out: Vec<Outcome> = times
        .iter()
        .enumerate()
        .flat_map(|(n, &t)| rig.at(T0 + 100, spam(&format!("m{n}"), t)).outcomes)
        .collect();
    assert_eq!(out.last(), Some(&tripped(1, false)));
    let b = rig.state.block().unwrap();
    assert_eq!(b.blocked_at, T0 + 50);
    assert_eq!(b.evidence_message_ids, ["m1", "m3", "m4", "m2", "m0"]);
}

#[test]
fn future_sent_at_is_clamped() {
    let mut rig = Rig::new();
    let r = rig.at(T0, spam("ok", T0 + 300_000));
    assert!(!r.clamped);
    assert_eq!(rig.state.window().newest(), Some(T0 + 300_000));
    let mut rig = Rig::new();
    let r = rig.at(T0, spam("far", T0 + 300_001));
    assert!(r.clamped);
    assert_eq!(r.outcomes, [Counted]);
    assert_eq!(rig.state.window().newest(), Some(T0));
    // A far-future trip cannot push the block into the future.
    for n in 1..5 {
        rig.at(T0 + n, spam(&format!("f{n}"), i64::MAX));
    }
    let b = rig.state.block().unwrap();
    assert_eq!(b.blocked_at, T0 + 4);
    assert_eq!(b.blocked_until, Some(T0 + 4 + H));
}

fn permanent_rig() -> Rig {
    let mut rig = Rig::with(
        Dir::standard(),
        Policy {
            permanent_strike: 1,
            ..Policy::default()
        },
    );
    let r = rig.trip_at("p", T0);
    assert_eq!(r.outcomes, [tripped(1, true)]);
    rig
}

#[test]
fn support_unblock_lifts_a_permanent_block() {
    let mut rig = permanent_rig();
    // Its incident's scans are overdue long before the unblock.
    let r = rig.at(T0 + 5 * H, tick());
    assert_eq!(r.outcomes, [closed(false, true)]);
    let inc = rig.state.incident_id().unwrap();
    let now = T0 + 10 * H;
    let cmd = command("cmd-1", CommandKind::SupportUnblock, ActorRole::Support);
    let r = rig.at(now, cmd.clone());
    assert_eq!(r.outcomes, [Outcome::SupportUnblocked]);
    assert!(r.state_changed);
    let Input::Command(c) = &cmd else {
        unreachable!()
    };
    assert_eq!(
        r.effects,
        vec![
            Effect::Block(BlockRecord {
                mailbox: MB.into(),
                tenant_id: TENANT.into(),
                state: BlockState::Unblocked,
                strike: 0,
                blocked_at: T0 + 4_000,
                blocked_until: None,
                incident_id: inc.clone(),
                evidence_message_ids: vec![
                    "p0".into(),
                    "p1".into(),
                    "p2".into(),
                    "p3".into(),
                    "p4".into()
                ],
                updated_at: now,
            }),
            Effect::Event(EventLogEntry {
                event_id: ids::event_id(MB, "cmd-1", EventKind::SupportUnblock, "").to_string(),
                incident_id: Some(inc.clone()),
                tenant_id: TENANT.into(),
                mailbox: MB.into(),
                kind: EventKind::SupportUnblock,
                at: now,
                detail: text::support_unblock_detail(c),
                reason: None,
                trip: None,
            }),
        ]
    );
    let detail = events(&r)[0].1.to_owned();
    assert!(
        detail.contains("bob") && detail.contains("TCK-1"),
        "{detail}"
    );
    assert_eq!(rig.state.strikes(), 0);
    assert_eq!(rig.state.block(), None);
    // Verdicts sent before the unblock never count; after it, counting starts afresh.
    assert_eq!(
        rig.at(now + 1, spam("old", now - 1)).outcomes,
        [IgnoredWhileBlocked]
    );
    // Redelivery of the command: rejected, harmless.
    let r = rig.at(now + 2, cmd);
    assert_eq!(r.outcomes, [Outcome::CommandRejected]);
    assert!(!r.state_changed);
    // Strike 1 again, with a new incident id.
    let r = rig.trip_at("q", now + 10);
    assert_eq!(r.outcomes, [tripped(1, true)]);
    assert_ne!(rig.state.incident_id().unwrap(), inc);
}

#[test]
fn command_rejections() {
    type Setup = fn() -> Rig;
    let timed: Setup = || {
        let mut rig = Rig::new();
        rig.trip_at("a", T0);
        rig
    };
    let cases: Vec<(&str, Setup, CommandKind, ActorRole, &str, RejectCode)> = vec![
        (
            "admin role",
            permanent_rig,
            CommandKind::SupportUnblock,
            ActorRole::Admin,
            "role ADMIN may not SUPPORT_UNBLOCK",
            RejectCode::RoleNotAllowed,
        ),
        (
            "viewer role",
            permanent_rig,
            CommandKind::SupportUnblock,
            ActorRole::Viewer,
            "role VIEWER may not SUPPORT_UNBLOCK",
            RejectCode::RoleNotAllowed,
        ),
        (
            "support on a timed block",
            timed,
            CommandKind::SupportUnblock,
            ActorRole::Support,
            "a timed block cannot be ended early",
            RejectCode::TimedBlock,
        ),
        (
            "support on an unblocked mailbox",
            Rig::new,
            CommandKind::SupportUnblock,
            ActorRole::Support,
            "mailbox is not permanently blocked",
            RejectCode::NotBlocked,
        ),
        (
            "unknown kind",
            permanent_rig,
            CommandKind::Other("ADMIN_UNBLOCK".into()),
            ActorRole::Support,
            "unknown command kind ADMIN_UNBLOCK",
            RejectCode::UnknownKind,
        ),
    ];
    for (name, setup, kind, role, reason, code) in cases {
        let mut rig = setup();
        let before = rig.state.clone();
        let now = T0 + 10_000;
        let r = rig.at(now, command("cmd-9", kind, role));
        assert_eq!(r.outcomes, [Outcome::CommandRejected], "{name}");
        assert!(!r.state_changed, "{name}");
        assert_eq!(rig.state, before, "{name}");
        assert_eq!(r.effects.len(), 1, "{name}");
        let Effect::Event(e) = &r.effects[0] else {
            panic!("{name}: {r:?}")
        };
        assert_eq!(e.kind, EventKind::CommandRejected, "{name}");
        assert_eq!(
            e.event_id,
            ids::event_id(MB, "cmd-9", EventKind::CommandRejected, "").to_string()
        );
        assert_eq!(e.incident_id, before.incident_id(), "{name}");
        assert!(e.detail.contains(reason), "{name}: {}", e.detail);
        assert_eq!(e.reason, Some(code), "{name}: the reason travels as data");
        assert!(e.detail.contains("bob") && e.detail.contains("TCK-1"));
    }
}

#[test]
fn trip_effects_in_order_one_scan_per_distinct_device() {
    let mut rig = Rig::new();
    let r = rig.trip_at("m", T0);
    let now = T0 + 4_000;
    let inc = ids::incident_id(MB, 1, now);
    let incs = inc.to_string();
    let ev = |kind: EventKind, disc: &str, detail: String| {
        Effect::Event(EventLogEntry {
            event_id: ids::event_id(MB, &incs, kind, disc).to_string(),
            incident_id: Some(incs.clone()),
            tenant_id: TENANT.into(),
            mailbox: MB.into(),
            kind,
            at: now,
            detail,
            reason: None,
            trip: None,
        })
    };
    let scan = |d: &str| {
        Effect::Scan(ScanRequest {
            request_id: ids::request_id(&inc, d).to_string(),
            incident_id: incs.clone(),
            tenant_id: TENANT.into(),
            device_id: d.into(),
            owner_id: "u1".into(),
            mailbox: MB.into(),
            requested_at: now,
        })
    };
    let evidence: Vec<String> = (0..5).map(|n| format!("m{n}")).collect();
    let until = now + H;
    let mut blocked = ev(
        EventKind::MailboxBlocked,
        "",
        text::blocked_detail(1, now, Some(until), 5),
    );
    // The block event carries the trip as data (issue 23).
    if let Effect::Event(e) = &mut blocked {
        e.trip = Some(TripFacts {
            strike: 1,
            first_sent_at: T0,
            blocked_at: now,
            block_ms: Some(H),
            blocked_until: Some(until),
            evidence_message_ids: evidence.clone(),
            exempt: false,
        });
    }
    let expected = vec![
        Effect::Block(BlockRecord {
            mailbox: MB.into(),
            tenant_id: TENANT.into(),
            state: BlockState::Blocked,
            strike: 1,
            blocked_at: now,
            blocked_until: Some(until),
            incident_id: incs.clone(),
            evidence_message_ids: evidence,
            updated_at: now,
        }),
        scan("d1"),
        scan("d2"),
        Effect::Alert(Alert {
            kind: Default::default(),
            alert_id: ids::alert_id(&inc).to_string(),
            incident_id: incs.clone(),
            tenant_id: TENANT.into(),
            mailbox: MB.into(),
            owner_id: Some("u1".into()),
            strike: 1,
            state: BlockState::Blocked,
            blocked_until: Some(until),
            devices_scanned: vec!["d1".into(), "d2".into()],
            scan_skipped_reason: None,
            summary: text::alert_summary(MB, 1, Some(until), 5, 2, None),
        }),
        blocked,
        ev(EventKind::ScanRequested, "d1", "d1".into()),
        ev(EventKind::ScanRequested, "d2", "d2".into()),
        ev(
            EventKind::AlertSent,
            "",
            text::alert_sent_detail(&ids::alert_id(&inc).to_string()),
        ),
    ];
    assert_eq!(r.effects, expected);
    assert_eq!(r.outcomes, [tripped(1, false)]);
}

/// A scan case: its name, the directory, the skip reason expected (none: a scan), the owner.
type ScanCase = (
    &'static str,
    Dir,
    Option<ScanSkipReason>,
    Option<&'static str>,
);

#[test]
fn each_scan_skip_reason() {
    for (name, dir, reason, owner) in scan_cases() {
        assert_trip_scans_or_skips(name, dir, reason, owner);
    }
}

/// Every reason a trip scans no device, the precedence of two, and a trip that scans.
fn scan_cases() -> Vec<ScanCase> {
    vec![
        (
            "sync off",
            Dir::standard().tenant_with(|t| t.sync_security_enabled = false),
            Some(ScanSkipReason::SyncSecurityOff),
            Some("u1"),
        ),
        (
            "sync off wins over no licence",
            Dir::standard().tenant_with(|t| {
                t.sync_security_enabled = false;
                t.endpoint_licence = false
            }),
            Some(ScanSkipReason::SyncSecurityOff),
            Some("u1"),
        ),
        (
            "no licence",
            Dir::standard().tenant_with(|t| t.endpoint_licence = false),
            Some(ScanSkipReason::NoEndpointLicence),
            Some("u1"),
        ),
        (
            "owner unknown",
            Dir::default(),
            Some(ScanSkipReason::OwnerUnknown),
            None,
        ),
        (
            "no devices known",
            {
                let mut d = Dir::standard();
                d.devices.clear();
                d
            },
            Some(ScanSkipReason::NoDevices),
            Some("u1"),
        ),
        (
            "empty device list",
            {
                let mut d = Dir::standard();
                d.devices.insert("u1".into(), vec![]);
                d
            },
            Some(ScanSkipReason::NoDevices),
            Some("u1"),
        ),
        ("scan", Dir::standard(), None, Some("u1")),
    ]
}

/// A trip under `dir`: its alert names `owner` and `reason`; with a reason no scan and a
/// `SCAN_SKIPPED` event between the block and the alert, without one a scan per device; the
/// mailbox is blocked either way.
fn assert_trip_scans_or_skips(
    name: &str,
    dir: Dir,
    reason: Option<ScanSkipReason>,
    owner: Option<&str>,
) {
    let mut rig = Rig::with(dir, Policy::default());
    let r = rig.trip_at("m", T0);
    let scans = r
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Scan(_)))
        .count();
    let a = alert(&r);
    assert_eq!(a.scan_skipped_reason, reason, "{name}");
    assert_eq!(a.owner_id.as_deref(), owner, "{name}");
    let kinds: Vec<EventKind> = events(&r).iter().map(|e| e.0).collect();
    match reason {
        Some(why) => {
            assert_eq!(scans, 0, "{name}");
            assert!(a.devices_scanned.is_empty());
            assert_eq!(
                events(&r)[1],
                (EventKind::ScanSkipped, why.as_str()),
                "{name}"
            );
            assert_eq!(
                kinds,
                [
                    EventKind::MailboxBlocked,
                    EventKind::ScanSkipped,
                    EventKind::AlertSent
                ]
            );
        }
        None => {
            assert_eq!(scans, 2, "{name}");
            assert_eq!(a.devices_scanned, ["d1", "d2"]);
        }
    }
    // Blocking goes on either way.
    assert_eq!(blocks(&r).len(), 1, "{name}");
    assert_eq!(rig.state.block_state(), BlockState::Blocked);
}

#[test]
fn tenant_override_threshold_3() {
    let dir = Dir::standard().tenant_with(|t| {
        t.overrides = PolicyOverrides {
            threshold: Some(3),
            base_block_ms: Some(60_000),
            ..PolicyOverrides::default()
        }
    });
    let mut rig = Rig::with(dir, Policy::default());
    let out = rig.burst("m", &[T0, T0 + 1, T0 + 2]);
    assert_eq!(out, [Counted, Counted, tripped(1, false)]);
    assert_eq!(rig.state.blocked_until(), Some(T0 + 2 + 60_000));
    // Other tenants keep the default.
    let mut rig = Rig::new();
    assert_eq!(rig.burst("m", &[T0, T0 + 1, T0 + 2]), [Counted; 3]);
}

#[test]
fn strike_decay() {
    let policy = Policy {
        strike_decay_ms: Some(10 * H),
        ..Policy::default()
    };
    let mut rig = Rig::with(Dir::standard(), policy);
    rig.trip_at("a", T0);
    let end1 = rig.state.blocked_until().unwrap();
    rig.at(end1, tick());
    // Less than one decay period later: strike 2.
    let r = rig.trip_at("b", end1 + 10 * H - 10_000);
    assert_eq!(r.outcomes, [tripped(2, false)]);
    let end2 = rig.state.blocked_until().unwrap();
    rig.at(end2, tick());
    // 2 full periods after the end of the last block: 2 − 2 + 1 = strike 1.
    let r = rig.trip_at("c", end2 + 20 * H);
    assert_eq!(r.outcomes, [tripped(1, false)]);
    // Without decay it would have been 3.
    let mut rig = Rig::new();
    let mut t = T0;
    for (k, p) in [(1, "a"), (2, "b"), (3, "c")] {
        let r = rig.trip_at(p, t);
        assert_eq!(r.outcomes, [tripped(k, false)]);
        t = rig.state.blocked_until().unwrap() + 100 * H;
    }
}

#[test]
fn idle_ttl_resets_an_idle_window() {
    let mut rig = Rig::new();
    let ttl = rig.policy.state_idle_ttl_ms;
    rig.burst("m", &[T0, T0 + 1, T0 + 2, T0 + 3]);
    assert!(!rig.state.is_forgettable(T0 + 3 + ttl, &rig.policy));
    assert!(rig.state.is_forgettable(T0 + 4 + ttl, &rig.policy));
    // A stray verdict sent long ago, delivered after the TTL, does not combine with the old
    // window.
    let now = T0 + 4 + ttl;
    assert_eq!(rig.at(now, spam("x", T0 + 4)).outcomes, [Counted]);
    assert_eq!(rig.state.window().len(), 1);
}

#[test]
fn window_stays_bounded() {
    let mut rig = Rig::new();
    // A slow spammer: 4 per 10 minutes + 1 ms, for a day.
    let mut t = T0;
    for n in 0..600 {
        let r = rig.at(t, spam(&format!("s{n}"), t));
        assert_eq!(r.outcomes, [Counted]);
        t += 150_001;
    }
    assert!(
        rig.state.window().len() <= 8,
        "{}",
        rig.state.window().len()
    );
}

#[test]
fn unknown_mailbox_tick_and_command() {
    let mut rig = Rig::new();
    let r = rig.at(T0, tick());
    assert_eq!(r.outcomes, [Outcome::Idle]);
    assert!(r.effects.is_empty() && !r.state_changed);
    assert_eq!(rig.state, MailboxState::default());
}

#[test]
fn threshold_one_and_extreme_times_do_not_panic() {
    let dir = Dir::standard().tenant_with(|t| t.overrides.threshold = Some(1));
    let mut rig = Rig::with(dir, Policy::default());
    for (n, (now, sent)) in [
        (i64::MIN, i64::MIN),
        (i64::MAX, i64::MIN),
        (i64::MAX, i64::MAX),
        (0, i64::MAX),
        (i64::MIN, 0),
    ]
    .into_iter()
    .enumerate()
    {
        rig.at(now, spam(&format!("e{n}"), sent));
        rig.at(now, tick());
        rig.at(
            now,
            command(
                &format!("c{n}"),
                CommandKind::SupportUnblock,
                ActorRole::Support,
            ),
        );
    }
}

// ---------------------------------------------------------------- alert-only tenants (issue 21)

fn alert_only() -> Dir {
    Dir::standard().tenant_with(|t| t.mode = TenantMode::AlertOnly)
}

fn alerts(r: &StepResult) -> Vec<&Alert> {
    r.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Alert(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn kinds(r: &StepResult) -> Vec<EventKind> {
    events(r).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn an_alert_only_trip_blocks_and_scans_nothing_and_says_what_enforcement_would_do() {
    let mut rig = Rig::with(alert_only(), Policy::default());
    let r = rig.trip_at("a", T0);
    assert_eq!(
        r.outcomes,
        [Outcome::SimulatedTrip {
            strike: 1,
            permanent: false
        }]
    );
    assert!(blocks(&r).is_empty(), "{r:?}");
    assert!(!r.effects.iter().any(|e| matches!(e, Effect::Scan(_))));
    let a = alert(&r);
    assert_eq!(a.kind, AlertKind::SimulatedBlock);
    assert_eq!((a.strike, a.state), (1, BlockState::Blocked));
    assert_eq!(a.blocked_until, Some(T0 + 4_000 + H));
    let t = trip_of(&r, EventKind::TripSimulated);
    assert_eq!(
        (
            t.strike,
            t.first_sent_at,
            t.blocked_at,
            t.block_ms,
            t.exempt
        ),
        (1, T0, T0 + 4_000, Some(H), false)
    );
    assert!(a.devices_scanned.is_empty() && a.scan_skipped_reason.is_none());
    assert!(
        a.summary.contains("would block it for 1 h (strike 1)"),
        "{}",
        a.summary
    );
    assert_eq!(kinds(&r), [EventKind::TripSimulated, EventKind::AlertSent]);
    let (_, detail) = events(&r)[0];
    assert!(
        detail.starts_with("strike 1: would be blocked for 1 h"),
        "{detail}"
    );
    assert_eq!(rig.state.block(), None);
    assert_eq!(rig.state.strikes(), 0, "the real ladder did not move");
    assert_eq!(rig.state.next_deadline(), None, "no timer: nothing to end");
    // The would-be block keeps what it would have blocked from counting...
    let r = rig.at(T0 + 10_000, spam("during", T0 + 10_000));
    assert_eq!(r.outcomes, [IgnoredWhileBlocked]);
    // ...and the would-be ladder advances: strike 2, 2 h.
    let r = rig.trip_at("b", T0 + 2 * H);
    assert_eq!(
        r.outcomes,
        [Outcome::SimulatedTrip {
            strike: 2,
            permanent: false
        }]
    );
    assert_eq!(alert(&r).blocked_until, Some(T0 + 2 * H + 4_000 + 2 * H));
    assert!(events(&r)[0].1.contains("for 2 h"), "{:?}", events(&r));
}

#[test]
fn a_simulated_permanent_strike_blocks_nothing_either() {
    let policy = Policy {
        permanent_strike: 1,
        ..Policy::default()
    };
    let mut rig = Rig::with(alert_only(), policy);
    let r = rig.trip_at("a", T0);
    assert_eq!(
        r.outcomes,
        [Outcome::SimulatedTrip {
            strike: 1,
            permanent: true
        }]
    );
    assert!(blocks(&r).is_empty());
    assert_eq!(alert(&r).state, BlockState::PermanentlyBlocked);
    assert!(events(&r)[0].1.contains("would be blocked permanently"));
    assert_eq!(rig.state.block(), None);
}

#[test]
fn switching_to_enforce_starts_the_real_ladder_and_blocks_nothing_for_earlier_trips() {
    let mut rig = Rig::with(alert_only(), Policy::default());
    rig.trip_at("a", T0);
    rig.trip_at("b", T0 + 2 * H);
    assert_eq!(rig.state.simulated().map(|s| s.strikes), Some(2));
    // ENFORCE while the would-be block of strike 2 would still be in force: nothing is blocked
    // by the switch, and verdicts count again (the would-be block never applied).
    rig.dir = Dir::standard();
    let r = rig.at(T0 + 3 * H, spam("c0", T0 + 3 * H));
    assert_eq!(r.outcomes, [Counted]);
    assert!(r.effects.is_empty());
    assert_eq!(
        rig.state.simulated(),
        None,
        "the would-be ladder is dropped"
    );
    let r = rig.burst(
        "d",
        &[
            T0 + 3 * H + 1,
            T0 + 3 * H + 2,
            T0 + 3 * H + 3,
            T0 + 3 * H + 4,
        ],
    );
    assert_eq!(
        r.last(),
        Some(&tripped(1, false)),
        "the real ladder starts at strike 1"
    );
    assert_eq!(rig.state.blocked_until(), Some(T0 + 3 * H + 4 + H));
}

#[test]
fn a_real_block_in_force_outlives_a_switch_to_alert_only() {
    let mut rig = Rig::new();
    rig.trip_at("a", T0);
    rig.dir = alert_only();
    // Still blocked; it ends by itself, as ever.
    assert_eq!(rig.state.block_state(), BlockState::Blocked);
    let r = rig.at(T0 + 4_000 + H, tick());
    assert_eq!(r.outcomes, [Outcome::Unblocked]);
    // A verdict sent during the real block does not count in simulation either.
    let r = rig.at(T0 + 4_000 + H, spam("late", T0 + 10_000));
    assert_eq!(r.outcomes, [IgnoredWhileBlocked]);
}

// ---------------------------------------------------------------- early warning (issue 21)

/// The SPEC default (`threshold − 1`), which the rule table's rigs turn off.
fn warning_on() -> Policy {
    Policy {
        warn_threshold: Some(4),
        ..Policy::default()
    }
}

#[test]
fn the_default_warning_threshold_is_one_below_the_threshold() {
    assert_eq!(Policy::default().warn_at(), Some(4));
    let off = Policy {
        warn_threshold: Some(0),
        ..Policy::default()
    };
    assert_eq!(off.warn_at(), None);
    let at_threshold = Policy {
        warn_threshold: Some(5),
        ..Policy::default()
    };
    assert_eq!(at_threshold.warn_at(), None);
    let one = Policy {
        threshold: 1,
        ..Policy::default()
    };
    assert_eq!(
        one.warn_at(),
        None,
        "threshold 1 has nothing to warn before"
    );
}

#[test]
fn four_offending_messages_warn_once_then_the_fifth_blocks() {
    let mut rig = Rig::with(Dir::standard(), warning_on());
    let out = rig.burst("m", &[T0, T0 + 1, T0 + 2]);
    assert_eq!(out, [Counted; 3]);
    let r = rig.at(T0 + 3, spam("m3", T0 + 3));
    assert_eq!(r.outcomes, [Counted, Outcome::Warned]);
    let a = alert(&r);
    assert_eq!(a.kind, AlertKind::Warning);
    assert_eq!(
        (a.state, a.strike, a.blocked_until),
        (BlockState::Unblocked, 0, None)
    );
    assert!(a
        .summary
        .starts_with("Early warning: mailbox alice@example.test sent 4"));
    assert_eq!(kinds(&r), [EventKind::MailboxWarned, EventKind::AlertSent]);
    let warned = events(&r)[0].1.to_owned();
    assert!(
        warned.starts_with("4 offending messages sent from"),
        "{warned}"
    );
    assert_eq!(rig.state.warned_through(), Some(T0 + 3));
    // The same message again (a redelivery): nothing.
    let r = rig.at(T0 + 3, spam("m3", T0 + 3));
    assert_eq!(r.outcomes, [Duplicate]);
    // The fifth trips, with no second warning.
    let r = rig.at(T0 + 4, spam("m4", T0 + 4));
    assert_eq!(r.outcomes, [tripped(1, false)]);
    assert_eq!(alerts(&r).len(), 1);
    assert_eq!(alert(&r).kind, AlertKind::Block);
    assert_eq!(rig.state.warned_through(), None);
}

#[test]
fn one_warning_per_window_and_again_for_a_later_run() {
    let mut rig = Rig::with(Dir::standard(), warning_on());
    let out = rig.burst("a", &[T0, T0 + 1, T0 + 2, T0 + 3]);
    assert_eq!(out.iter().filter(|o| **o == Outcome::Warned).count(), 1);
    // Out of the first message's window but overlapping the warned run: no new warning.
    let t = T0 + 600_001;
    let out = rig.burst("b", &[t]);
    assert_eq!(out, [Counted]);
    // A run of four sent after the warned one: a second warning (not a trip: no five of the
    // window's messages lie within 10 min).
    let t2 = T0 + 1_300_000;
    let out = rig.burst("c", &[t2, t2 + 1, t2 + 2, t2 + 3]);
    assert_eq!(out, [Counted, Counted, Counted, Counted, Outcome::Warned]);
    assert_eq!(rig.state.warned_through(), Some(t2 + 3));
}

#[test]
fn the_warning_threshold_is_a_tenant_override_and_zero_turns_it_off() {
    let dir = Dir::standard().tenant_with(|t| t.overrides.warn_threshold = Some(2));
    let mut rig = Rig::with(dir, warning_on());
    assert_eq!(
        rig.burst("m", &[T0, T0 + 1]),
        [Counted, Counted, Outcome::Warned]
    );
    let dir = Dir::standard().tenant_with(|t| t.overrides.warn_threshold = Some(0));
    let mut rig = Rig::with(dir, warning_on());
    assert_eq!(rig.burst("m", &[T0, T0 + 1, T0 + 2, T0 + 3]), [Counted; 4]);
}

#[test]
fn an_alert_only_tenant_is_warned_too() {
    let mut rig = Rig::with(alert_only(), warning_on());
    let out = rig.burst("m", &[T0, T0 + 1, T0 + 2, T0 + 3]);
    assert_eq!(out.last(), Some(&Outcome::Warned));
}

// ---------------------------------------------------------------- full-length blocks (issue 21)

#[test]
fn a_backlog_an_hour_old_is_blocked_for_the_full_hour_from_when_mailguard_trips() {
    let mut rig = Rig::new();
    let lag = H + 10 * 60_000;
    let now = T0 + lag;
    let out: Vec<Outcome> = (0..5)
        .flat_map(|n| {
            rig.at(now, spam(&format!("old{n}"), T0 + n * 1_000))
                .outcomes
        })
        .collect();
    assert_eq!(out[4], tripped(1, false));
    let b = rig.state.block().unwrap();
    assert_eq!(
        b.blocked_at,
        T0 + 4_000,
        "blocked_at stays the evidence's event time"
    );
    assert_eq!(b.blocked_until, Some(now + H), "a full hour from the trip");
    // Not ended in the same step (the old rule wrote BLOCKED and UNBLOCKED together), nor
    // 1 ms before the hour is up.
    assert_eq!(rig.at(now, tick()).outcomes, [Outcome::Idle]);
    assert_eq!(rig.at(now + H - 1, tick()).outcomes, [Outcome::Idle]);
    // The rest of the backlog, sent before the block's end, never counts.
    let r = rig.at(now + 1, spam("old5", T0 + 5_000));
    assert_eq!(r.outcomes, [IgnoredWhileBlocked]);
    assert_eq!(rig.at(now + H, tick()).outcomes, [Outcome::Unblocked]);
}

#[test]
fn without_lag_the_block_runs_from_blocked_at_as_before() {
    let mut rig = Rig::new();
    rig.trip_at("a", T0);
    assert_eq!(rig.state.blocked_until(), Some(T0 + 4_000 + H));
    // A verdict from slightly in the future (within the skew) trips from its own time.
    let mut rig = Rig::new();
    for n in 0..5 {
        rig.at(T0, spam(&format!("f{n}"), T0 + 60_000 + n));
    }
    assert_eq!(rig.state.blocked_until(), Some(T0 + 60_004 + H));
}

#[test]
fn a_simulated_backlog_trip_reports_the_full_length_too() {
    let mut rig = Rig::with(alert_only(), Policy::default());
    let now = T0 + 2 * H;
    let r = (0..5)
        .map(|n| rig.at(now, spam(&format!("old{n}"), T0 + n)))
        .last()
        .unwrap();
    assert_eq!(alert(&r).blocked_until, Some(now + H));
    assert!(
        events(&r)[0].1.contains("would be blocked for 1 h"),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Exemptions (rules 1b, 9b, 10b)

fn exempt_cmd(
    id: &str,
    kind: CommandKind,
    role: ActorRole,
    pattern: &str,
    reason: Option<&str>,
    expires_at: Option<Millis>,
) -> Input {
    Input::Command(Command {
        command_id: id.into(),
        mailbox: pattern.into(),
        tenant_id: TENANT.into(),
        kind,
        actor: "carol".into(),
        actor_role: role,
        ticket: String::new(),
        issued_at: T0,
        reason: reason.map(str::to_owned),
        expires_at,
    })
}

fn put(pattern: &str, expires_at: Option<Millis>) -> Input {
    exempt_cmd(
        "put-1",
        CommandKind::ExemptionPut,
        ActorRole::Admin,
        pattern,
        Some("ticketing system"),
        expires_at,
    )
}

fn changes(r: &StepResult) -> Vec<&ExemptionChange> {
    r.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Exemption(x) => Some(x),
            _ => None,
        })
        .collect()
}

fn spam_of(mailbox: &str, tenant: &str, id: &str, sent_at: Millis) -> Input {
    Input::Verdict(Verdict {
        message_id: id.into(),
        tenant_id: tenant.into(),
        mailbox: mailbox.into(),
        sent_at,
        verdict: VerdictKind::Spam,
    })
}

/// Five offending messages of `mailbox` from `start`, one a second; the last step's result.
fn five(rig: &mut Rig, mailbox: &str, tenant: &str, start: Millis) -> StepResult {
    let mut last = StepResult::default();
    for i in 0..5 {
        let t = start + i * 1_000;
        last = rig.at(t, spam_of(mailbox, tenant, &format!("{mailbox}-{t}"), t));
    }
    last
}

fn exemption(pattern: &str, expires_at: Option<Millis>) -> Exemption {
    Exemption {
        tenant_id: TENANT.into(),
        pattern: pattern.into(),
        reason: "newsletter".into(),
        actor: "carol".into(),
        actor_role: ActorRole::Admin,
        command_id: "put-d".into(),
        created_at: T0,
        expires_at,
    }
}

/// The trip recorded as data by the event of `kind` (issue 23).
fn trip_of(r: &StepResult, kind: EventKind) -> &TripFacts {
    r.effects
        .iter()
        .find_map(|e| match e {
            Effect::Event(e) if e.kind == kind => e.trip.as_ref(),
            _ => None,
        })
        .expect("the trip as data")
}

fn assert_exempt_trip(r: &StepResult, mailbox: &str, pattern: &str) {
    assert_eq!(r.outcomes, [Outcome::ExemptTrip], "{mailbox}: {r:?}");
    let t = trip_of(r, EventKind::TripExempted);
    assert!(t.exempt && t.evidence_message_ids.len() == 5, "{t:?}");
    assert!(
        t.block_ms.is_some() && t.strike >= 1,
        "what it would have applied: {t:?}"
    );
    assert!(blocks(r).is_empty(), "no block");
    assert!(
        !r.effects.iter().any(|e| matches!(e, Effect::Scan(_))),
        "no scan"
    );
    let a = alert(r);
    assert_eq!(a.kind, AlertKind::ExemptTrip);
    assert_eq!(a.mailbox, mailbox);
    assert_eq!(a.state, BlockState::Unblocked);
    assert_eq!(a.blocked_until, None);
    assert!(a.summary.contains(pattern), "{}", a.summary);
    let ev = events(r);
    assert_eq!(
        ev.iter().map(|e| e.0).collect::<Vec<_>>(),
        [EventKind::TripExempted, EventKind::AlertSent]
    );
    assert!(
        ev[0].1.contains(pattern) && ev[0].1.contains("reason:"),
        "{}",
        ev[0].1
    );
}

#[test]
fn an_exempt_mailbox_trips_without_block_scan_or_strike() {
    let mut rig = Rig::new();
    let r = rig.at(T0, put(MB, None));
    assert_eq!(r.outcomes, [Outcome::ExemptionAdded]);
    assert!(r.state_changed);
    let x = changes(&r);
    assert_eq!(x.len(), 1);
    let e = x[0].exemption.as_ref().expect("an upsert");
    assert_eq!(
        (e.pattern.as_str(), e.tenant_id.as_str(), e.reason.as_str()),
        (MB, TENANT, "ticketing system")
    );
    assert_eq!(
        (e.actor.as_str(), e.actor_role),
        ("carol", ActorRole::Admin)
    );
    assert_eq!((e.created_at, e.expires_at), (T0, None));
    let ev = events(&r);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, EventKind::ExemptionAdded);
    assert!(
        ev[0].1.contains("carol")
            && ev[0].1.contains("ADMIN")
            && ev[0].1.contains("ticketing system"),
        "{}",
        ev[0].1
    );
    let r = five(&mut rig, MB, TENANT, T0 + 1_000);
    assert_exempt_trip(&r, MB, MB);
    assert_eq!(rig.state.strikes(), 0);
    assert_eq!(rig.state.block(), None);
    assert_eq!(rig.state.counting_floor(), None);
    assert!(rig.state.window().is_empty(), "the trip emptied the window");
    // And again: the next five trip (exempt) again, never the real ladder.
    let r = five(&mut rig, MB, TENANT, T0 + 10_000);
    assert_exempt_trip(&r, MB, MB);
    assert_eq!(rig.state.strikes(), 0);
    // Removed: the next trip blocks, strike 1.
    let del = exempt_cmd(
        "del-1",
        CommandKind::ExemptionDelete,
        ActorRole::Support,
        MB,
        Some("done"),
        None,
    );
    let r = rig.at(T0 + 20_000, del);
    assert_eq!(r.outcomes, [Outcome::ExemptionRemoved]);
    assert_eq!(changes(&r)[0].exemption, None, "a tombstone");
    assert_eq!(events(&r)[0].0, EventKind::ExemptionRemoved);
    assert!(events(&r)[0].1.contains("SUPPORT"));
    let r = five(&mut rig, MB, TENANT, T0 + 30_000);
    assert_eq!(r.outcomes, [tripped(1, false)]);
}

#[test]
fn an_exemption_expires_exactly_at_expires_at_and_the_next_trip_blocks() {
    let mut rig = Rig::new();
    let until = T0 + H;
    rig.at(T0, put(MB, Some(until)));
    assert_eq!(rig.state.next_deadline(), Some(until));
    let r = rig.at(until - 1, tick());
    assert_eq!(r.outcomes, [Outcome::Idle]);
    assert!(r.effects.is_empty());
    let r = rig.at(until, tick());
    assert_eq!(r.outcomes, [Outcome::ExemptionExpired]);
    assert_eq!(changes(&r).len(), 1);
    assert_eq!(changes(&r)[0].exemption, None);
    let ev = events(&r);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, EventKind::ExemptionExpired);
    assert!(ev[0].1.contains("ticketing system"), "{}", ev[0].1);
    let Effect::Event(e) = &r.effects[1] else {
        panic!()
    };
    assert_eq!(
        e.event_id,
        ids::event_id(MB, "put-1", EventKind::ExemptionExpired, "").to_string(),
        "ids from the granting command: a replay writes the same event"
    );
    assert!(rig.state.exemptions().is_empty());
    assert_eq!(rig.state.next_deadline(), None);
    assert!(rig.at(until + 1, tick()).effects.is_empty(), "once");
    let r = five(&mut rig, MB, TENANT, until + 1_000);
    assert_eq!(r.outcomes, [tripped(1, false)]);
}

#[test]
fn an_expired_exemption_never_matches_even_before_its_timer() {
    // Exact: the trip itself expires it first (lazily), then blocks.
    let mut rig = Rig::new();
    let until = T0 + 3_000;
    rig.at(T0, put(MB, Some(until)));
    let r = five(&mut rig, MB, TENANT, until - 1_000);
    assert_eq!(r.outcomes, [tripped(1, false)]);
    // Domain: the table still holds it, expired: not in force.
    let mut dir = Dir::standard();
    let p = "*@example.test";
    dir.exemptions.insert(
        Exemption::table_key(TENANT, p),
        exemption(p, Some(T0 + 5_000)),
    );
    let mut rig = Rig::with(dir, Policy::default());
    let r = five(&mut rig, MB, TENANT, T0);
    assert_exempt_trip(&r, MB, p);
    let r = five(&mut rig, MB, TENANT, T0 + 1_000);
    assert_eq!(
        r.outcomes,
        [tripped(1, false)],
        "at expires_at it no longer matches"
    );
}

#[test]
fn a_domain_pattern_exempts_that_domain_only() {
    let mut dir = Dir::standard();
    let p = "*@example.test";
    dir.exemptions
        .insert(Exemption::table_key(TENANT, p), exemption(p, None));
    let cases = [
        (MB, TENANT, true),
        ("bob@example.test", TENANT, true),
        ("bob@other.test", TENANT, false),
        ("bob@sub.example.test", TENANT, false),
        ("bob@example.test.evil", TENANT, false),
        ("bob@example.test", "t2", false),
    ];
    let mut rig = Rig::with(dir, Policy::default());
    for (mailbox, tenant, exempt) in cases {
        rig.state = MailboxState::default();
        let r = five(&mut rig, mailbox, tenant, T0);
        if exempt {
            assert_exempt_trip(&r, mailbox, p);
        } else {
            assert_eq!(r.outcomes, [tripped(1, false)], "{mailbox} of {tenant}");
        }
    }
}

#[test]
fn an_exemption_never_ends_a_block_in_force() {
    let mut rig = Rig::new();
    let r = five(&mut rig, MB, TENANT, T0);
    assert_eq!(r.outcomes, [tripped(1, false)]);
    let until = rig.state.blocked_until().expect("timed block");
    let r = rig.at(T0 + 10_000, put(MB, None));
    assert_eq!(r.outcomes, [Outcome::ExemptionAdded]);
    assert!(blocks(&r).is_empty(), "no UNBLOCKED");
    assert_eq!(rig.state.block_state(), BlockState::Blocked);
    assert_eq!(rig.state.next_deadline(), Some(until));
    let r = rig.at(until, tick());
    assert_eq!(
        r.outcomes,
        [Outcome::Unblocked],
        "it ends by itself, on time"
    );
    // Afterwards the exemption holds.
    let r = five(&mut rig, MB, TENANT, until + 1_000);
    assert_exempt_trip(&r, MB, MB);
}

/// Exemption commands that are rejected: name, command, words of the detail, code.
fn exemption_rejections() -> Vec<(&'static str, Input, &'static str, RejectCode)> {
    let pe = Some("why");
    vec![
        (
            "viewer",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Viewer,
                MB,
                pe,
                None,
            ),
            "role VIEWER may not EXEMPTION_PUT",
            RejectCode::RoleNotAllowed,
        ),
        (
            "viewer delete",
            exempt_cmd(
                "c",
                CommandKind::ExemptionDelete,
                ActorRole::Viewer,
                MB,
                pe,
                None,
            ),
            "role VIEWER may not EXEMPTION_DELETE",
            RejectCode::RoleNotAllowed,
        ),
        (
            "two @",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Admin,
                "a@b@c",
                pe,
                None,
            ),
            "exactly one '@'",
            RejectCode::InvalidExemption,
        ),
        (
            "partial wildcard",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Admin,
                "a*@b.c",
                pe,
                None,
            ),
            "'*' may only be",
            RejectCode::InvalidExemption,
        ),
        (
            "wildcard domain",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Admin,
                "*@*.c",
                pe,
                None,
            ),
            "'*' may only be",
            RejectCode::InvalidExemption,
        ),
        (
            "no local part",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Admin,
                "@b.c",
                pe,
                None,
            ),
            "a local part",
            RejectCode::InvalidExemption,
        ),
        (
            "no reason",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Admin,
                MB,
                Some(" "),
                None,
            ),
            "needs a reason",
            RejectCode::InvalidExemption,
        ),
        (
            "expired already",
            exempt_cmd(
                "c",
                CommandKind::ExemptionPut,
                ActorRole::Admin,
                MB,
                pe,
                Some(T0),
            ),
            "not in the future",
            RejectCode::InvalidExemption,
        ),
        (
            "delete of nothing",
            exempt_cmd(
                "c",
                CommandKind::ExemptionDelete,
                ActorRole::Admin,
                MB,
                pe,
                None,
            ),
            "holds no exemption",
            RejectCode::NotExempt,
        ),
    ]
}

#[test]
fn exemption_command_rejections() {
    for (name, input, why, code) in exemption_rejections() {
        let mut rig = Rig::new();
        let r = rig.at(T0, input);
        assert_eq!(r.outcomes, [Outcome::CommandRejected], "{name}");
        assert!(!r.state_changed, "{name}");
        assert_eq!(rig.state, MailboxState::default(), "{name}");
        assert_eq!(r.effects.len(), 1, "{name}");
        let Effect::Event(e) = &r.effects[0] else {
            panic!("{name}")
        };
        assert_eq!(e.kind, EventKind::CommandRejected, "{name}");
        assert_eq!(e.reason, Some(code), "{name}");
        assert!(e.detail.contains(why), "{name}: {}", e.detail);
    }
}

#[test]
fn tenants_hold_their_own_exemptions_of_one_pattern() {
    let other = |kind: CommandKind| {
        let mut c = put(MB, None);
        if let Input::Command(c) = &mut c {
            c.tenant_id = "t2".into();
            c.kind = kind;
            c.command_id = "put-t2".into();
        }
        c
    };
    let mut rig = Rig::new();
    rig.at(T0, put(MB, Some(T0 + H)));
    // t2 may not remove t1's exemption.
    let r = rig.at(T0 + 1, other(CommandKind::ExemptionDelete));
    assert_eq!(r.outcomes, [Outcome::CommandRejected]);
    let r = rig.at(T0 + 2, other(CommandKind::ExemptionPut));
    assert_eq!(r.outcomes, [Outcome::ExemptionAdded]);
    assert!(
        !events(&r)[0].1.contains("replaces"),
        "t1's is not replaced"
    );
    assert_eq!(rig.state.exemptions().len(), 2);
    // t1's expires by itself; t2's stays, and covers t2's verdicts only.
    let r = rig.at(T0 + H, tick());
    assert_eq!(r.outcomes, [Outcome::ExemptionExpired]);
    assert_eq!(changes(&r)[0].tenant_id, TENANT);
    assert_eq!(
        rig.state.exemption_of("t2").map(|e| e.command_id.as_str()),
        Some("put-t2")
    );
    let r = five(&mut rig, MB, TENANT, T0 + H + 1_000);
    assert_eq!(r.outcomes, [tripped(1, false)]);
    let mut rig = Rig::new();
    rig.at(T0, other(CommandKind::ExemptionPut));
    let r = five(&mut rig, MB, "t2", T0 + 1_000);
    assert_exempt_trip(&r, MB, MB);
    let r = five(&mut rig, MB, TENANT, T0 + 10_000);
    assert_eq!(r.outcomes, [tripped(1, false)], "not t1's");
}

#[test]
fn one_pattern_is_held_by_a_bounded_number_of_tenants() {
    let mut rig = Rig::new();
    for i in 0..state::MAX_EXEMPTIONS_PER_KEY {
        let mut c = put("*@example.test", None);
        if let Input::Command(c) = &mut c {
            c.tenant_id = format!("other-{i}");
        }
        assert_eq!(rig.at(T0, c).outcomes, [Outcome::ExemptionAdded]);
    }
    let r = rig.at(T0, put("*@example.test", None));
    assert_eq!(r.outcomes, [Outcome::CommandRejected]);
    let Effect::Event(e) = &r.effects[0] else {
        panic!()
    };
    assert_eq!(e.reason, Some(RejectCode::ExemptionLimit));
}

#[test]
fn the_exemption_bound_rejects_a_new_one_but_not_a_replacement() {
    let mut rig = Rig::new();
    rig.at(T0, put(MB, None));
    rig.dir.exemptions_full = true;
    let r = rig.at(T0 + 1, put(MB, Some(T0 + H)));
    assert_eq!(
        r.outcomes,
        [Outcome::ExemptionAdded],
        "a replacement adds none"
    );
    assert!(events(&r)[0].1.contains("replaces"));
    assert_eq!(
        rig.state.exemption_of(TENANT).and_then(|e| e.expires_at),
        Some(T0 + H)
    );
    let mut rig = Rig::new();
    rig.dir.exemptions_full = true;
    let r = rig.at(T0, put("*@example.test", None));
    assert_eq!(r.outcomes, [Outcome::CommandRejected]);
    let Effect::Event(e) = &r.effects[0] else {
        panic!()
    };
    assert_eq!(e.reason, Some(RejectCode::ExemptionLimit));
    assert!(
        e.detail.contains("max_exemptions_per_tenant"),
        "{}",
        e.detail
    );
    assert_eq!(rig.state, MailboxState::default());
}

#[test]
fn an_exemption_state_is_never_forgotten_and_survives_its_encoding() {
    let mut rig = Rig::new();
    rig.at(T0, put("*@example.test", Some(T0 + H)));
    let s = &rig.state;
    assert!(!s.is_forgettable(T0 + 100 * H, &rig.policy));
    let back = MailboxState::decode(&s.to_bytes()).unwrap();
    assert_eq!(back.exemptions(), s.exemptions());
}

// -------------------------------------------------------------------------------------------
// Issue 22: scan results and incidents that end (rules 9c, 11 and 1c).

/// A result of `device` for the incident of the block in force (ids as mailguard made them).
fn result_of(rig: &Rig, device: &str, status: ScanStatus, threats: &[&str]) -> Input {
    let incident = rig.state.block().expect("a block").incident_id;
    scan_result(incident, device, status, threats)
}

fn scan_result(incident: uuid::Uuid, device: &str, status: ScanStatus, threats: &[&str]) -> Input {
    Input::ScanResult(ScanResult {
        request_id: ids::request_id(&incident, device).to_string(),
        incident_id: incident.to_string(),
        tenant_id: TENANT.into(),
        device_id: device.into(),
        mailbox: Some(MB.into()),
        status,
        threats: threats.iter().map(|t| t.to_string()).collect(),
        started_at: T0,
        completed_at: T0 + 1,
    })
}

fn closed(remediated: bool, overdue: bool) -> Outcome {
    Outcome::IncidentClosed {
        remediated,
        overdue,
    }
}

/// A trip of the standard directory (devices d1 and d2) at T0 opens one incident due 4 h later.
fn tripped_with_two_devices() -> Rig {
    let mut rig = Rig::new();
    let r = rig.trip_at("m", T0);
    assert_eq!(r.outcomes, [tripped(1, false)]);
    let inc = &rig.state.open_incidents()[0];
    assert_eq!((inc.devices, inc.pending.len()), (2, 2));
    assert_eq!(inc.deadline, T0 + 4_000 + 4 * H);
    rig
}

#[test]
fn a_trip_with_devices_opens_an_incident_and_one_without_does_not() {
    let rig = tripped_with_two_devices();
    assert_eq!(rig.state.open_incidents().len(), 1);
    for dir in [
        Dir::standard().tenant_with(|t| t.sync_security_enabled = false),
        Dir::default(),
    ] {
        let mut rig = Rig::with(dir, Policy::default());
        rig.trip_at("m", T0);
        assert!(rig.state.open_incidents().is_empty());
        // The block's own timer is the only one.
        assert_eq!(rig.state.next_deadline(), Some(T0 + 4_000 + H));
    }
}

#[test]
fn one_device_clean_one_with_threats_remaining_needs_attention_once() {
    let mut rig = tripped_with_two_devices();
    let incident = rig.state.block().unwrap().incident_id;
    let r = rig.at(T0 + H / 2, result_of(&rig, "d1", ScanStatus::Clean, &[]));
    assert_eq!(r.outcomes, [Outcome::ScanCompleted]);
    assert_eq!(
        events(&r),
        [(EventKind::ScanCompleted, "device d1: CLEAN, 0 threats")]
    );
    let r = rig.at(
        T0 + H / 2 + 1,
        result_of(
            &rig,
            "d2",
            ScanStatus::ThreatsRemaining,
            &["EICAR", "Troj/X"],
        ),
    );
    assert_eq!(r.outcomes, [Outcome::ScanCompleted, closed(false, false)]);
    let needs = "needs attention: 1 of 2 devices clean or cleaned, 1 with threats remaining or \
                 a failed scan, 0 not reported; 2 threats found";
    let update_alert = ids::incident_update_alert_id(&incident).to_string();
    assert_eq!(
        events(&r),
        [
            (
                EventKind::ScanCompleted,
                "device d2: THREATS_REMAINING, 2 threats"
            ),
            (EventKind::IncidentNeedsAttention, needs),
            (
                EventKind::AlertSent,
                text::alert_sent_detail(&update_alert).as_str()
            ),
        ]
    );
    let a = alert(&r);
    assert_eq!(a.kind, AlertKind::IncidentUpdate);
    assert_eq!(a.alert_id, update_alert);
    assert_ne!(a.alert_id, ids::alert_id(&incident).to_string());
    assert_eq!(a.incident_id, incident.to_string());
    assert_eq!(a.owner_id.as_deref(), Some("u1"));
    assert_eq!((a.strike, a.state), (1, BlockState::Blocked));
    assert_eq!(a.blocked_until, Some(T0 + 4_000 + H));
    assert_eq!(
        a.summary,
        format!("Incident of {MB} {needs}. The block is unchanged.")
    );
    // The block is untouched and the incident gone; the event ids are the incident's.
    assert!(blocks(&r).is_empty());
    assert_eq!(rig.state.blocked_until(), Some(T0 + 4_000 + H));
    assert!(rig.state.open_incidents().is_empty());
    let Effect::Event(e) = &r.effects[0] else {
        panic!("{r:?}")
    };
    let scope = incident.to_string();
    assert_eq!(
        e.event_id,
        ids::event_id(MB, &scope, EventKind::ScanCompleted, "d2").to_string()
    );
    // A repeat of either result now changes nothing (the incident has ended).
    for d in ["d1", "d2"] {
        let r = rig.at(T0 + H, result_of(&rig, d, ScanStatus::Clean, &[]));
        assert_eq!(
            r.outcomes,
            [Outcome::ScanResultIgnored(ScanIgnored::UnknownRequest)]
        );
        assert!(r.effects.is_empty() && !r.state_changed);
    }
}

#[test]
fn both_clean_or_cleaned_is_remediated_and_never_shortens_the_block() {
    let mut rig = tripped_with_two_devices();
    let before = rig.state.block().cloned();
    rig.at(
        T0 + 10,
        result_of(&rig, "d2", ScanStatus::ThreatsRemoved, &["EICAR"]),
    );
    let r = rig.at(T0 + 20, result_of(&rig, "d1", ScanStatus::Clean, &[]));
    assert_eq!(r.outcomes, [Outcome::ScanCompleted, closed(true, false)]);
    assert_eq!(kinds(&r)[1], EventKind::IncidentRemediated);
    assert!(alert(&r).summary.contains("remediated: 2 of 2 devices"));
    assert_eq!(rig.state.block().cloned(), before);
    // The block still ends when the ladder says, not earlier.
    let until = before.unwrap().blocked_until.unwrap();
    assert_eq!(rig.at(until - 1, tick()).outcomes, [Outcome::Idle]);
    assert_eq!(rig.at(until, tick()).outcomes, [Outcome::Unblocked]);
    assert_eq!(rig.state.next_deadline(), None);
}

#[test]
fn a_device_silent_past_the_timeout_makes_the_incident_overdue_exactly_at_the_deadline() {
    let mut rig = tripped_with_two_devices();
    rig.at(T0 + 10, result_of(&rig, "d1", ScanStatus::Clean, &[]));
    let deadline = rig.state.open_incidents()[0].deadline;
    // The block (1 h) ends first; then the incident's deadline is the timer.
    rig.at(T0 + 4_000 + H, tick());
    assert_eq!(rig.state.next_deadline(), Some(deadline));
    assert_eq!(rig.at(deadline - 1, tick()).outcomes, [Outcome::Idle]);
    let r = rig.at(deadline, tick());
    assert_eq!(r.outcomes, [closed(false, true)]);
    assert_eq!(
        kinds(&r),
        [
            EventKind::ScanOverdue,
            EventKind::IncidentNeedsAttention,
            EventKind::AlertSent
        ]
    );
    assert_eq!(
        events(&r)[0].1,
        format!(
            "1 of 2 devices did not report a scan result by {}",
            text::iso8601(deadline)
        )
    );
    assert_eq!(alert(&r).state, BlockState::Unblocked);
    assert_eq!(alert(&r).blocked_until, None);
    assert_eq!(rig.state.next_deadline(), None);
    // A late result finds no incident.
    let incident = uuid::Uuid::parse_str(&alert(&r).incident_id).unwrap();
    let late = rig.at(
        deadline + 1,
        scan_result(incident, "d2", ScanStatus::Clean, &[]),
    );
    assert_eq!(
        late.outcomes,
        [Outcome::ScanResultIgnored(ScanIgnored::UnknownRequest)]
    );
}

#[test]
fn duplicate_unknown_and_foreign_results_change_nothing() {
    let mut rig = tripped_with_two_devices();
    let incident = rig.state.block().unwrap().incident_id;
    rig.at(T0 + 10, result_of(&rig, "d1", ScanStatus::Clean, &[]));
    let before = rig.state.clone();
    let mut other_tenant = result_of(&rig, "d2", ScanStatus::Clean, &[]);
    if let Input::ScanResult(r) = &mut other_tenant {
        r.tenant_id = "t2".into();
    }
    let mut wrong_request = result_of(&rig, "d2", ScanStatus::Clean, &[]);
    if let Input::ScanResult(r) = &mut wrong_request {
        r.request_id = ids::request_id(&incident, "d1").to_string();
    }
    let mut garbage_ids = result_of(&rig, "d2", ScanStatus::Clean, &[]);
    if let Input::ScanResult(r) = &mut garbage_ids {
        r.request_id = "not-a-uuid".into();
    }
    let cases = [
        (
            result_of(&rig, "d1", ScanStatus::ThreatsRemaining, &[]),
            ScanIgnored::Duplicate,
        ),
        (
            result_of(&rig, "d9", ScanStatus::Clean, &[]),
            ScanIgnored::UnknownRequest,
        ),
        (
            scan_result(uuid::Uuid::from_u128(1), "d2", ScanStatus::Clean, &[]),
            ScanIgnored::UnknownRequest,
        ),
        (other_tenant, ScanIgnored::OtherTenant),
        (wrong_request, ScanIgnored::UnknownRequest),
        (garbage_ids, ScanIgnored::UnknownRequest),
    ];
    for (input, why) in cases {
        let r = rig.at(T0 + 20, input.clone());
        assert_eq!(r.outcomes, [Outcome::ScanResultIgnored(why)], "{input:?}");
        assert!(r.effects.is_empty() && !r.state_changed, "{input:?}");
        assert_eq!(rig.state, before);
    }
}

#[test]
fn failed_and_unknown_statuses_need_attention() {
    for status in [ScanStatus::Failed, ScanStatus::Unknown] {
        let mut rig = tripped_with_two_devices();
        rig.at(T0 + 10, result_of(&rig, "d1", ScanStatus::Clean, &[]));
        let r = rig.at(T0 + 20, result_of(&rig, "d2", status, &[]));
        assert_eq!(
            r.outcomes,
            [Outcome::ScanCompleted, closed(false, false)],
            "{status:?}"
        );
    }
}

#[test]
fn open_incidents_per_mailbox_are_bounded_the_oldest_closing_as_overdue() {
    // Blocks of minutes: every trip comes long before the first incident's 4 h deadline.
    let policy = Policy {
        base_block_ms: 60_000,
        ..Policy::default()
    };
    let mut rig = Rig::with(Dir::standard(), policy);
    rig.trip_at("m", T0);
    let first = rig.state.block().unwrap().incident_id;
    for _ in 1..state::MAX_OPEN_INCIDENTS {
        let t = rig.state.blocked_until().unwrap();
        rig.at(t, tick());
        rig.trip_at(&format!("t{t}"), t);
    }
    assert_eq!(rig.state.open_incidents().len(), state::MAX_OPEN_INCIDENTS);
    // The next trip happens before any deadline: the oldest incident is closed to make room.
    let t = rig.state.blocked_until().unwrap();
    assert!(t < rig.state.open_incidents()[0].deadline);
    rig.at(t, tick());
    let r = rig.trip_at("last", t);
    assert!(r.outcomes.contains(&closed(false, true)), "{r:?}");
    assert_eq!(rig.state.open_incidents().len(), state::MAX_OPEN_INCIDENTS);
    assert!(rig
        .state
        .open_incidents()
        .iter()
        .all(|i| i.incident_id != first));
    let update = alerts(&r)
        .into_iter()
        .find(|a| a.kind == AlertKind::IncidentUpdate)
        .expect("the oldest incident's update");
    assert_eq!(update.incident_id, first.to_string());
}
