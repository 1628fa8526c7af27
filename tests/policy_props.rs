//! Property tests of the policy core against a naive reference model.
//!
//! The reference below is written independently of `src/policy`: it keeps the *full* history of
//! counted messages since the last reset (no pruning), recomputes the newest `sent_at`, the
//! duplicates and the trips by brute force over the sorted history on every verdict, and builds
//! the expected records by hand. Only the deterministic ids (`policy::ids`) and the wording of
//! the free-text fields (`policy::text`) are shared.
//!
//! Random interleavings of a few mailboxes (tenants with different settings and overrides),
//! offending and clean verdicts, redeliveries (same id and `sent_at`), out-of-order arrival
//! within and beyond the allowed lateness, far-future `sent_at`, ticks, commands of every role
//! and kind, and - on the implementation side only - mid-stream encode/decode of the state and
//! dropping of forgettable states. Effects, outcomes, `clamped` and `state_changed` must match
//! exactly.
//!
//! Failures persist in `tests/policy_props.proptest-regressions` (commit it).

use mailguard::policy::text::{self, RejectReason};
use mailguard::policy::{
    ids, step, ActorRole, Alert, AlertKind, BlockRecord, BlockState, Command, CommandKind,
    Directory, Effect, EventKind, EventLogEntry, Input, MailboxState, Millis, Outcome, Owner,
    Policy, PolicyOverrides, ScanRequest, ScanSkipReason, StepResult, TenantMode, TenantSettings,
    TripFacts, Verdict, VerdictKind,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::cell::Cell;
use std::collections::HashMap;

// ---------------------------------------------------------------- world

const MAILBOXES: [&str; 3] = ["m0@a.test", "m1@b.test", "m2@c.test"];
const TENANTS: [&str; 3] = ["tA", "tB", "tC"];

struct World {
    tenants: HashMap<&'static str, TenantSettings>,
    /// tC's mode, switched by `Op::SwitchMode` (ENFORCE ⇄ ALERT_ONLY).
    c_mode: Cell<TenantMode>,
}

impl World {
    fn new(b_threshold: u32, b_base: Millis, b_warn: Option<u32>) -> World {
        let mut tenants = HashMap::new();
        // tA: unknown to the directory → defaults (sync on, licence on).
        // tB: overrides, sync off.
        tenants.insert(
            "tB",
            TenantSettings {
                mode: Default::default(),
                sync_security_enabled: false,
                endpoint_licence: true,
                overrides: PolicyOverrides {
                    threshold: Some(b_threshold),
                    window_ms: None,
                    base_block_ms: Some(b_base),
                    permanent_strike: None,
                    warn_threshold: b_warn,
                },
                shadow: None,
            },
        );
        // tC: no endpoint licence... except the owner is unknown anyway for m2; keep licence on
        // so OWNER_UNKNOWN is exercised.
        tenants.insert(
            "tC",
            TenantSettings {
                mode: Default::default(),
                sync_security_enabled: true,
                endpoint_licence: true,
                overrides: PolicyOverrides::default(),
                shadow: None,
            },
        );
        World {
            tenants,
            c_mode: Cell::new(TenantMode::AlertOnly),
        }
    }
}

impl Directory for World {
    fn owner(&self, mailbox: &str) -> Option<Owner> {
        let (id, t) = match mailbox {
            "m0@a.test" => ("u0", "tA"),
            "m1@b.test" => ("u1", "tB"),
            _ => return None,
        };
        Some(Owner {
            owner_id: id.into(),
            tenant_id: t.into(),
            owner_name: None,
        })
    }
    fn devices(&self, owner_id: &str) -> Option<Vec<String>> {
        (owner_id == "u0").then(|| vec!["d1".into(), "d2".into(), "d1".into(), "d3".into()])
    }
    fn tenant(&self, tenant_id: &str) -> TenantSettings {
        let mut t = self
            .tenants
            .get(tenant_id)
            .cloned()
            .unwrap_or(TenantSettings {
                mode: Default::default(),
                sync_security_enabled: true,
                endpoint_licence: true,
                overrides: PolicyOverrides::default(),
                shadow: None,
            });
        if tenant_id == "tC" {
            t.mode = self.c_mode.get();
        }
        t
    }
}

// ---------------------------------------------------------------- reference model

#[derive(Clone)]
struct RefBlock {
    strike: u32,
    at: Millis,
    until: Option<Millis>,
    incident: String,
    evidence: Vec<String>,
}

#[derive(Clone, Default)]
struct RefMailbox {
    /// (sent_at, message_id, arrival sequence) of every counted message since the last reset.
    history: Vec<(Millis, String, u64)>,
    strikes: u32,
    block: Option<RefBlock>,
    floor: Option<Millis>,
    last_end: Option<Millis>,
    touched: Millis,
    tenant: String,
    /// Largest sent_at of the last warning's run.
    warned: Option<Millis>,
    /// The would-be ladder (strikes, until; None = permanent) of an ALERT_ONLY tenant.
    sim: Option<(u32, Option<Millis>)>,
    /// Incidents waiting for scan results (no result ever arrives here): id, tenant, strike,
    /// deadline, devices; oldest first.
    incidents: Vec<(uuid::Uuid, String, u32, Millis, u32)>,
}

/// Most incidents of a mailbox open at once (the implementation's bound, restated).
const OPEN_INCIDENTS: usize = 3;

struct Reference<'a> {
    policy: Policy,
    world: &'a World,
    boxes: HashMap<String, RefMailbox>,
    seq: u64,
}

/// The ladder, by brute force: decay one strike per full period since `last_end`, then the next
/// strike and its end (None = permanent), counted from `blocked_at` or from `now` when that is
/// later (a block never lasts less than its length).
fn next_strike(
    p: &Policy,
    strikes: u32,
    last_end: Option<Millis>,
    (blocked_at, now): (Millis, Millis),
    base: Millis,
    perm: u32,
) -> (u32, Option<Millis>) {
    let mut strikes = strikes;
    if let (Some(d), Some(end)) = (p.strike_decay_ms, last_end) {
        let mut t = end;
        while strikes > 0 && t + d <= blocked_at {
            strikes -= 1;
            t += d;
        }
    }
    let strike = strikes + 1;
    let until = if strike >= perm {
        None
    } else {
        let d = i128::from(base) * (1i128 << (strike - 1));
        let start = if now > blocked_at { now } else { blocked_at };
        Some((i128::from(start) + d).min(i128::from(i64::MAX)) as i64)
    };
    (strike, until)
}

/// The earliest run of `k` consecutive entries of the sorted history, all sent after `after`,
/// that contains arrival `me` and spans at most `window`.
fn run_of(
    sorted: &[(Millis, String, u64)],
    k: usize,
    window: Millis,
    me: u64,
    after: Option<Millis>,
) -> Option<Vec<(Millis, String, u64)>> {
    let eligible: Vec<_> = sorted
        .iter()
        .filter(|h| after.is_none_or(|a| h.0 > a))
        .cloned()
        .collect();
    if k == 0 || eligible.len() < k {
        return None;
    }
    (0..=eligible.len() - k).find_map(|start| {
        let g = &eligible[start..start + k];
        let span = g.iter().map(|h| h.0).max().unwrap() - g.iter().map(|h| h.0).min().unwrap();
        (span <= window && g.iter().any(|h| h.2 == me)).then(|| g.to_vec())
    })
}

/// The reference's alert that blocks nothing (warning, simulated block) with its event and
/// ALERT_SENT, built field by field.
fn notice(
    r: &mut StepResult,
    v: &Verdict,
    id_u: uuid::Uuid,
    alert: (AlertKind, u32, BlockState, Option<Millis>, String),
    event: (EventKind, String, Option<TripFacts>),
    now: Millis,
) {
    let id = id_u.to_string();
    let alert_id = ids::alert_id(&id_u).to_string();
    let (kind, strike, state, blocked_until, summary) = alert;
    r.effects.push(Effect::Alert(Alert {
        kind,
        alert_id: alert_id.clone(),
        incident_id: id.clone(),
        tenant_id: v.tenant_id.clone(),
        mailbox: v.mailbox.clone(),
        owner_id: None,
        strike,
        state,
        blocked_until,
        devices_scanned: vec![],
        scan_skipped_reason: None,
        summary,
    }));
    let (kind, detail, trip) = event;
    r.effects.push(with_trip(
        incident_event(v, &id, (kind, ""), detail, now),
        trip,
    ));
    let sent = text::alert_sent_detail(&alert_id);
    r.effects.push(incident_event(
        v,
        &id,
        (EventKind::AlertSent, ""),
        sent,
        now,
    ));
}

/// `e` recording `trip` as data.
fn with_trip(mut e: Effect, trip: Option<TripFacts>) -> Effect {
    if let Effect::Event(e) = &mut e {
        e.trip = trip;
    }
    e
}

/// The trip as data, from the tripping group (sorted by `sent_at`) and the block it applies.
fn trip_facts(
    strike: u32,
    group: &[(Millis, String, u64)],
    now: Millis,
    until: Option<Millis>,
) -> TripFacts {
    let first = group.iter().map(|h| h.0).min().unwrap();
    let last = group.iter().map(|h| h.0).max().unwrap();
    TripFacts {
        strike,
        first_sent_at: first,
        blocked_at: last,
        block_ms: until.map(|u| u - last.max(now)),
        blocked_until: until,
        evidence_message_ids: group.iter().map(|h| h.1.clone()).collect(),
        exempt: false,
    }
}

/// An event of `v`'s mailbox belonging to incident (or stand-in id) `scope`.
fn incident_event(
    v: &Verdict,
    scope: &str,
    (kind, disc): (EventKind, &str),
    detail: String,
    now: Millis,
) -> Effect {
    Effect::Event(EventLogEntry {
        event_id: ids::event_id(&v.mailbox, scope, kind, disc).to_string(),
        incident_id: Some(scope.to_owned()),
        tenant_id: v.tenant_id.clone(),
        mailbox: v.mailbox.clone(),
        kind,
        at: now,
        detail,
        reason: None,
        trip: None,
    })
}

fn tenant_policy(p: &Policy, t: &TenantSettings) -> (u32, Millis, Millis, u32) {
    // The generated overrides are always valid, so they simply apply.
    (
        t.overrides.threshold.unwrap_or(p.threshold),
        t.overrides.window_ms.unwrap_or(p.window_ms),
        t.overrides.base_block_ms.unwrap_or(p.base_block_ms),
        t.overrides.permanent_strike.unwrap_or(p.permanent_strike),
    )
}

impl Reference<'_> {
    fn step(&mut self, input: &Input, now: Millis) -> StepResult {
        let mut r = StepResult::default();
        let mailbox = match input {
            Input::Verdict(v) => v.mailbox.clone(),
            Input::Command(c) => c.mailbox.clone(),
            Input::ScanResult(_) => unreachable!("the scenarios send no scan results"),
            Input::Tick { mailbox } => mailbox.clone(),
        };
        let mut mb = self.boxes.remove(&mailbox).unwrap_or_default();
        let expired = Self::expire(&mut mb, &mailbox, now, &mut r);
        let mut overdue = false;
        while let Some(i) = mb.incidents.iter().position(|x| now >= x.3) {
            self.close(&mut mb, i, &mailbox, now, &mut r);
            overdue = true;
        }
        match input {
            Input::ScanResult(_) => unreachable!("the scenarios send no scan results"),
            Input::Tick { .. } => {
                if !expired && !overdue {
                    r.outcomes.push(Outcome::Idle);
                }
            }
            Input::Verdict(v) => self.verdict(&mut mb, v, now, &mut r),
            Input::Command(c) => Self::command(&mut mb, c, now, &mut r),
        }
        r.state_changed = r.outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::Counted
                    | Outcome::Tripped { .. }
                    | Outcome::SimulatedTrip { .. }
                    | Outcome::Unblocked
                    | Outcome::SupportUnblocked
                    | Outcome::IncidentClosed { .. }
            )
        });
        self.boxes.insert(mailbox, mb);
        r
    }

    /// Ends incident `i` as overdue: every device is still pending.
    fn close(&self, mb: &mut RefMailbox, i: usize, mailbox: &str, now: Millis, r: &mut StepResult) {
        let (id, tenant, strike, deadline, devices) = mb.incidents.remove(i);
        let scope = id.to_string();
        let event = |kind: EventKind, disc: &str, detail: String| {
            Effect::Event(EventLogEntry {
                event_id: ids::event_id(mailbox, &scope, kind, disc).to_string(),
                incident_id: Some(scope.clone()),
                tenant_id: tenant.clone(),
                mailbox: mailbox.into(),
                kind,
                at: now,
                detail,
                reason: None,
                trip: None,
            })
        };
        let n = devices as usize;
        r.effects.push(event(
            EventKind::ScanOverdue,
            "",
            text::scan_overdue_detail(n, devices, deadline.min(now)),
        ));
        let detail = text::incident_detail(false, devices, 0, 0, 0);
        let alert_id = ids::incident_update_alert_id(&id).to_string();
        let block = mb.block.as_ref();
        r.effects.push(Effect::Alert(Alert {
            kind: AlertKind::IncidentUpdate,
            alert_id: alert_id.clone(),
            incident_id: scope.clone(),
            tenant_id: tenant.clone(),
            mailbox: mailbox.into(),
            owner_id: self.world.owner(mailbox).map(|o| o.owner_id),
            strike,
            state: match block {
                None => BlockState::Unblocked,
                Some(b) if b.until.is_none() => BlockState::PermanentlyBlocked,
                Some(_) => BlockState::Blocked,
            },
            blocked_until: block.filter(|b| b.incident == scope).and_then(|b| b.until),
            devices_scanned: vec![],
            scan_skipped_reason: None,
            summary: text::incident_summary(mailbox, &detail),
        }));
        r.effects
            .push(event(EventKind::IncidentNeedsAttention, "", detail));
        r.effects.push(event(
            EventKind::AlertSent,
            "INCIDENT_UPDATE",
            text::alert_sent_detail(&alert_id),
        ));
        mb.touched = now;
        r.outcomes.push(Outcome::IncidentClosed {
            remediated: false,
            overdue: true,
        });
    }

    fn expire(mb: &mut RefMailbox, mailbox: &str, now: Millis, r: &mut StepResult) -> bool {
        let Some(b) = mb.block.clone() else {
            return false;
        };
        let Some(until) = b.until else { return false };
        if now < until {
            return false;
        }
        r.effects.push(Effect::Block(BlockRecord {
            mailbox: mailbox.into(),
            tenant_id: mb.tenant.clone(),
            state: BlockState::Unblocked,
            strike: b.strike,
            blocked_at: b.at,
            blocked_until: Some(until),
            incident_id: b.incident.clone(),
            evidence_message_ids: b.evidence.clone(),
            updated_at: now,
        }));
        r.effects.push(Effect::Event(EventLogEntry {
            event_id: ids::event_id(mailbox, &b.incident, EventKind::MailboxUnblocked, "")
                .to_string(),
            incident_id: Some(b.incident.clone()),
            tenant_id: mb.tenant.clone(),
            mailbox: mailbox.into(),
            kind: EventKind::MailboxUnblocked,
            at: now,
            detail: text::unblocked_detail(b.strike, until),
            reason: None,
            trip: None,
        }));
        r.outcomes.push(Outcome::Unblocked);
        mb.block = None;
        mb.touched = now;
        true
    }

    fn command(mb: &mut RefMailbox, c: &Command, now: Millis, r: &mut StepResult) {
        let reason = if c.kind != CommandKind::SupportUnblock {
            Some(RejectReason::UnknownKind)
        } else if c.actor_role != ActorRole::Support {
            Some(RejectReason::RoleNotAllowed(c.actor_role))
        } else {
            match &mb.block {
                None => Some(RejectReason::NotBlocked),
                Some(RefBlock { until: Some(u), .. }) => Some(RejectReason::TimedBlock(*u)),
                Some(_) => None,
            }
        };
        if let Some(reason) = reason {
            r.effects.push(Effect::Event(EventLogEntry {
                event_id: ids::event_id(&c.mailbox, &c.command_id, EventKind::CommandRejected, "")
                    .to_string(),
                incident_id: mb.block.as_ref().map(|b| b.incident.clone()),
                tenant_id: c.tenant_id.clone(),
                mailbox: c.mailbox.clone(),
                kind: EventKind::CommandRejected,
                at: now,
                detail: text::rejected_detail(c, reason),
                reason: Some(reason.code()),
                trip: None,
            }));
            r.outcomes.push(Outcome::CommandRejected);
            return;
        }
        let b = mb.block.take().unwrap();
        r.effects.push(Effect::Block(BlockRecord {
            mailbox: c.mailbox.clone(),
            tenant_id: mb.tenant.clone(),
            state: BlockState::Unblocked,
            strike: 0,
            blocked_at: b.at,
            blocked_until: None,
            incident_id: b.incident.clone(),
            evidence_message_ids: b.evidence,
            updated_at: now,
        }));
        r.effects.push(Effect::Event(EventLogEntry {
            event_id: ids::event_id(&c.mailbox, &c.command_id, EventKind::SupportUnblock, "")
                .to_string(),
            incident_id: Some(b.incident),
            tenant_id: mb.tenant.clone(),
            mailbox: c.mailbox.clone(),
            kind: EventKind::SupportUnblock,
            at: now,
            detail: text::support_unblock_detail(c),
            reason: None,
            trip: None,
        }));
        r.outcomes.push(Outcome::SupportUnblocked);
        mb.strikes = 0;
        mb.history.clear();
        mb.warned = None;
        mb.floor = Some(now);
        mb.last_end = Some(now);
        mb.touched = now;
    }

    fn verdict(&mut self, mb: &mut RefMailbox, v: &Verdict, now: Millis, r: &mut StepResult) {
        if !matches!(v.verdict, VerdictKind::Spam | VerdictKind::Virus) {
            r.outcomes.push(Outcome::NotOffending);
            return;
        }
        let p = &self.policy;
        let mut sent = v.sent_at;
        if sent > now + p.max_future_skew_ms {
            sent = now;
            r.clamped = true;
        }
        if mb.strikes == 0
            && mb.block.is_none()
            && mb.sim.is_none()
            && mb.incidents.is_empty()
            && now - mb.touched > p.state_idle_ttl_ms
        {
            mb.history.clear();
            mb.warned = None;
            mb.floor = None;
            mb.last_end = None;
        }
        let permanent = mb.block.as_ref().is_some_and(|b| b.until.is_none());
        if permanent || mb.floor.is_some_and(|f| sent < f) {
            r.outcomes.push(Outcome::IgnoredWhileBlocked);
            return;
        }
        if let Some(newest) = mb.history.iter().map(|h| h.0).max() {
            if sent < newest - p.allowed_lateness_ms {
                r.outcomes.push(Outcome::Late);
                return;
            }
        }
        // De-duplication horizon: ids are remembered while their sent_at is within
        // lateness + window of the newest (older ones can only come back as Late, except a
        // redelivery whose far-future sent_at is clamped again to a later clock).
        let (_, window_now, _, _) = tenant_policy(p, &self.world.tenant(&v.tenant_id));
        let newest = mb.history.iter().map(|h| h.0).max().unwrap_or(Millis::MIN);
        let horizon = newest.saturating_sub(p.allowed_lateness_ms + window_now);
        if mb
            .history
            .iter()
            .any(|h| h.1 == v.message_id && h.0 >= horizon)
        {
            r.outcomes.push(Outcome::Duplicate);
            return;
        }
        let tenant = self.world.tenant(&v.tenant_id);
        let simulate = tenant.mode == TenantMode::AlertOnly;
        if simulate {
            if let Some((_, until)) = mb.sim {
                if until.is_none_or(|u| sent < u) {
                    r.outcomes.push(Outcome::IgnoredWhileBlocked);
                    return;
                }
            }
        } else {
            mb.sim = None;
        }
        let (threshold, window, base, perm) = tenant_policy(p, &tenant);
        self.seq += 1;
        let me = self.seq;
        mb.history.push((sent, v.message_id.clone(), me));
        mb.touched = now;
        mb.tenant = v.tenant_id.clone();

        // Brute force: every run of `threshold` consecutive messages of the sorted history,
        // earliest first; the first that contains the new message and spans <= window trips.
        let mut sorted = mb.history.clone();
        sorted.sort_by_key(|h| (h.0, h.2));
        let Some(group) = run_of(&sorted, threshold as usize, window, me, None) else {
            r.outcomes.push(Outcome::Counted);
            let warn = tenant
                .overrides
                .warn_threshold
                .or(p.warn_threshold)
                .unwrap_or(threshold - 1);
            if warn == 0 || warn >= threshold {
                return;
            }
            let Some(run) = run_of(&sorted, warn as usize, window, me, mb.warned) else {
                return;
            };
            let (first, last) = (run[0].0, run[run.len() - 1].0);
            let state = match &mb.block {
                None => BlockState::Unblocked,
                Some(b) if b.until.is_some() => BlockState::Blocked,
                Some(_) => BlockState::PermanentlyBlocked,
            };
            let summary = text::warning_summary(&v.mailbox, warn, threshold, first, last);
            notice(
                r,
                v,
                ids::warning_id(&v.mailbox, last),
                (AlertKind::Warning, mb.strikes, state, None, summary),
                (
                    EventKind::MailboxWarned,
                    text::warned_detail(warn, threshold, first, last),
                    None,
                ),
                now,
            );
            mb.warned = Some(last);
            r.outcomes.push(Outcome::Warned);
            return;
        };
        let blocked_at = group.iter().map(|h| h.0).max().unwrap();
        let evidence: Vec<String> = group.iter().map(|h| h.1.clone()).collect();
        mb.history.clear();
        mb.warned = None;
        if simulate {
            let (strikes, last_end) = mb.sim.unwrap_or((0, None));
            let (strike, until) = next_strike(p, strikes, last_end, (blocked_at, now), base, perm);
            mb.sim = Some((strike, until));
            let length = until.map(|u| u - blocked_at.max(now));
            let state = if until.is_some() {
                BlockState::Blocked
            } else {
                BlockState::PermanentlyBlocked
            };
            let summary = text::simulated_summary(&v.mailbox, strike, length, evidence.len());
            notice(
                r,
                v,
                ids::simulated_incident_id(&v.mailbox, strike, blocked_at),
                (AlertKind::SimulatedBlock, strike, state, until, summary),
                (
                    EventKind::TripSimulated,
                    text::simulated_detail(strike, blocked_at, length, evidence.len()),
                    Some(trip_facts(strike, &group, now, until)),
                ),
                now,
            );
            r.outcomes.push(Outcome::SimulatedTrip {
                strike,
                permanent: until.is_none(),
            });
            return;
        }
        let (strike, until) =
            next_strike(p, mb.strikes, mb.last_end, (blocked_at, now), base, perm);
        mb.strikes = strike;
        if let Some(u) = until {
            mb.floor = Some(u);
            mb.last_end = Some(u);
        }
        let incident_u = ids::incident_id(&v.mailbox, strike, blocked_at);
        let incident = incident_u.to_string();
        mb.block = Some(RefBlock {
            strike,
            at: blocked_at,
            until,
            incident: incident.clone(),
            evidence: evidence.clone(),
        });
        let owner = self.world.owner(&v.mailbox);
        let mut devices: Vec<String> = vec![];
        let skipped = if !tenant.sync_security_enabled {
            Some(ScanSkipReason::SyncSecurityOff)
        } else if !tenant.endpoint_licence {
            Some(ScanSkipReason::NoEndpointLicence)
        } else if let Some(o) = &owner {
            for d in self.world.devices(&o.owner_id).unwrap_or_default() {
                if !devices.contains(&d) {
                    devices.push(d);
                }
            }
            if devices.is_empty() {
                Some(ScanSkipReason::NoDevices)
            } else {
                None
            }
        } else {
            Some(ScanSkipReason::OwnerUnknown)
        };
        let state = if until.is_some() {
            BlockState::Blocked
        } else {
            BlockState::PermanentlyBlocked
        };
        let ev = |kind: EventKind, disc: &str, detail: String| {
            incident_event(v, &incident, (kind, disc), detail, now)
        };
        r.effects.push(Effect::Block(BlockRecord {
            mailbox: v.mailbox.clone(),
            tenant_id: v.tenant_id.clone(),
            state,
            strike,
            blocked_at,
            blocked_until: until,
            incident_id: incident.clone(),
            evidence_message_ids: evidence.clone(),
            updated_at: now,
        }));
        for d in &devices {
            r.effects.push(Effect::Scan(ScanRequest {
                request_id: ids::request_id(&incident_u, d).to_string(),
                incident_id: incident.clone(),
                tenant_id: v.tenant_id.clone(),
                device_id: d.clone(),
                owner_id: owner.as_ref().unwrap().owner_id.clone(),
                mailbox: v.mailbox.clone(),
                requested_at: now,
            }));
        }
        let alert_id = ids::alert_id(&incident_u).to_string();
        r.effects.push(Effect::Alert(Alert {
            kind: Default::default(),
            alert_id: alert_id.clone(),
            incident_id: incident.clone(),
            tenant_id: v.tenant_id.clone(),
            mailbox: v.mailbox.clone(),
            owner_id: owner.as_ref().map(|o| o.owner_id.clone()),
            strike,
            state,
            blocked_until: until,
            devices_scanned: devices.clone(),
            scan_skipped_reason: skipped,
            summary: text::alert_summary(
                &v.mailbox,
                strike,
                until,
                evidence.len(),
                devices.len(),
                skipped,
            ),
        }));
        let blocked = ev(
            if until.is_some() {
                EventKind::MailboxBlocked
            } else {
                EventKind::MailboxPermanentlyBlocked
            },
            "",
            text::blocked_detail(strike, blocked_at, until, evidence.len()),
        );
        let facts = trip_facts(strike, &group, now, until);
        r.effects.push(with_trip(blocked, Some(facts)));
        if let Some(s) = skipped {
            r.effects
                .push(ev(EventKind::ScanSkipped, "", s.as_str().to_string()));
        }
        for d in &devices {
            r.effects.push(ev(EventKind::ScanRequested, d, d.clone()));
        }
        r.effects.push(ev(
            EventKind::AlertSent,
            "",
            text::alert_sent_detail(&alert_id),
        ));
        r.outcomes.push(Outcome::Tripped {
            strike,
            permanent: until.is_none(),
        });
        if skipped.is_none() {
            if mb.incidents.len() >= OPEN_INCIDENTS {
                self.close(mb, 0, &v.mailbox, now, r);
            }
            let deadline = now + self.policy.scan_result_timeout_ms;
            let n = devices.len() as u32;
            mb.incidents
                .push((incident_u, v.tenant_id.clone(), strike, deadline, n));
        }
    }
}

// ---------------------------------------------------------------- generators

#[derive(Debug, Clone)]
enum Op {
    /// A new verdict: mailbox, sent_at offset from now, kind (0 = clean).
    New(usize, Millis, u8),
    /// Redeliver an earlier verdict (index modulo the number so far).
    Redeliver(usize),
    Tick(usize),
    Command(usize, u8, u8),
    /// Let processor time pass.
    Advance(Millis),
    /// Implementation only: encode → decode the state.
    Roundtrip(usize),
    /// Implementation only: drop the state if it is forgettable.
    Forget(usize),
    /// Switch tenant tC between ALERT_ONLY and ENFORCE.
    SwitchMode,
}

fn op(lateness: Millis) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..3usize, -(lateness + 100)..400i64, 0..5u8).prop_map(|(m, o, k)| Op::New(m, o, k)),
        2 => (0..3usize, 1_000..5_000i64).prop_map(|(m, o)| Op::New(m, o, 1)),
        3 => any::<usize>().prop_map(Op::Redeliver),
        2 => (0..3usize).prop_map(Op::Tick),
        1 => (0..3usize, 0..4u8, 0..3u8).prop_map(|(m, k, r)| Op::Command(m, k, r)),
        3 => prop_oneof![0..100i64, 0..5_000i64, 0..40_000i64].prop_map(Op::Advance),
        2 => (0..3usize).prop_map(Op::Roundtrip),
        1 => (0..3usize).prop_map(Op::Forget),
        1 => Just(Op::SwitchMode),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        2..6u32,
        200..2_000i64,
        0..600i64,
        300..3_000i64,
        1..6u32,
        0..300i64,
        prop::option::of(1_000..20_000i64),
        0..20_000i64,
        prop::option::of(0..6u32),
    )
        // The result deadline of incidents (no scan result arrives in these scenarios).
        .prop_flat_map(|p| (Just(p), 1_000..30_000i64))
        .prop_map(
            |((threshold, window_ms, lateness, base, perm, skew, decay, ttl, warn), timeout)| {
                Policy {
                    threshold,
                    window_ms,
                    allowed_lateness_ms: lateness,
                    base_block_ms: base,
                    permanent_strike: perm,
                    max_future_skew_ms: skew,
                    strike_decay_ms: decay,
                    state_idle_ttl_ms: window_ms + lateness + ttl,
                    warn_threshold: warn,
                    scan_result_timeout_ms: timeout,
                    shadow: None,
                }
            },
        )
}

fn scenario() -> impl Strategy<Value = (Policy, u32, Millis, Option<u32>, Vec<Op>)> {
    policy().prop_flat_map(|p| {
        let lateness = p.allowed_lateness_ms;
        (
            Just(p),
            1..5u32,
            100..5_000i64,
            prop::option::of(0..5u32),
            prop::collection::vec(op(lateness), 1..250),
        )
    })
}

// ---------------------------------------------------------------- the property

fn run(
    policy: Policy,
    b_threshold: u32,
    b_base: Millis,
    b_warn: Option<u32>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    run_with(policy, b_threshold, b_base, b_warn, ops, Shadow::Off)
}

/// The shadow policy of a run (issue 23).
#[derive(Debug, Clone, PartialEq)]
enum Shadow {
    Off,
    /// Any candidate: the live side must be exactly the reference's (nothing else changes).
    Candidate(Policy),
    /// The live policy's own numbers (tenant overrides included): it must also trip exactly
    /// when the live policy trips, with the same strike (scenarios without support unblocks or
    /// mode switches, which act on the live ladder only).
    LikeLive,
}

/// What `r` says the shadow did, and `r` without it.
fn split_shadow(mut r: StepResult) -> (StepResult, Vec<Outcome>, Vec<EventLogEntry>) {
    let shadow: Vec<Outcome> = r
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::ShadowTrip { .. }))
        .copied()
        .collect();
    r.outcomes
        .retain(|o| !matches!(o, Outcome::ShadowTrip { .. }));
    let mut events = Vec::new();
    r.effects.retain(|e| match e {
        Effect::Event(e) if e.kind == EventKind::ShadowTrip => {
            events.push(e.clone());
            false
        }
        _ => true,
    });
    (r, shadow, events)
}

fn run_with(
    mut policy: Policy,
    b_threshold: u32,
    b_base: Millis,
    b_warn: Option<u32>,
    ops: Vec<Op>,
    shadow: Shadow,
) -> Result<(), TestCaseError> {
    policy.validate().unwrap();
    let mut world = World::new(b_threshold, b_base, b_warn);
    let reference_policy = policy.clone();
    match &shadow {
        Shadow::Off => {}
        Shadow::Candidate(p) => policy.shadow = Some(std::sync::Arc::new(p.clone())),
        Shadow::LikeLive => {
            policy.shadow = Some(std::sync::Arc::new(policy.clone()));
            for t in world.tenants.values_mut() {
                t.shadow = Some(t.overrides.clone());
            }
        }
    }
    let mut reference = Reference {
        policy: reference_policy,
        world: &world,
        boxes: HashMap::new(),
        seq: 0,
    };
    let mut states: HashMap<String, MailboxState> = HashMap::new();
    let mut sent: Vec<Verdict> = Vec::new();
    let mut now: Millis = 1_700_000_000_000;
    let mut n_new = 0u32;
    let mut n_cmd = 0u32;
    let roles = [ActorRole::Support, ActorRole::Admin, ActorRole::Viewer];
    for (i, op) in ops.into_iter().enumerate() {
        now += (i % 7) as i64 * 3; // a little time passes between records
        let input = match op {
            Op::Advance(d) => {
                now += d;
                continue;
            }
            Op::SwitchMode => {
                world.c_mode.set(match world.c_mode.get() {
                    TenantMode::Enforce => TenantMode::AlertOnly,
                    TenantMode::AlertOnly => TenantMode::Enforce,
                });
                continue;
            }
            Op::Roundtrip(m) => {
                if let Some(s) = states.get_mut(MAILBOXES[m]) {
                    let bytes = s.to_bytes();
                    let back = MailboxState::decode(&bytes).unwrap();
                    prop_assert_eq!(&back, &*s);
                    *s = back;
                }
                continue;
            }
            Op::Forget(m) => {
                if states
                    .get(MAILBOXES[m])
                    .is_some_and(|s| s.is_forgettable(now, &policy))
                {
                    states.remove(MAILBOXES[m]);
                }
                continue;
            }
            Op::New(m, offset, k) => {
                n_new += 1;
                let v = Verdict {
                    message_id: format!("msg-{n_new}"),
                    tenant_id: TENANTS[m].into(),
                    mailbox: MAILBOXES[m].into(),
                    sent_at: now + offset,
                    verdict: match k {
                        0 => VerdictKind::Clean,
                        1 | 2 => VerdictKind::Spam,
                        _ => VerdictKind::Virus,
                    },
                };
                sent.push(v.clone());
                Input::Verdict(v)
            }
            Op::Redeliver(j) => {
                if sent.is_empty() {
                    continue;
                }
                Input::Verdict(sent[j % sent.len()].clone())
            }
            Op::Tick(m) => Input::Tick {
                mailbox: MAILBOXES[m].into(),
            },
            Op::Command(m, k, role) => {
                n_cmd += 1;
                Input::Command(Command {
                    command_id: format!("cmd-{n_cmd}"),
                    mailbox: MAILBOXES[m].into(),
                    tenant_id: TENANTS[m].into(),
                    kind: if k == 0 {
                        CommandKind::Other("ADMIN_UNBLOCK".into())
                    } else {
                        CommandKind::SupportUnblock
                    },
                    actor: "ops".into(),
                    actor_role: roles[role as usize % 3],
                    ticket: format!("T-{n_cmd}"),
                    issued_at: now,
                    reason: None,
                    expires_at: None,
                })
            }
        };
        let key = match &input {
            Input::Verdict(v) => v.mailbox.clone(),
            Input::Command(c) => c.mailbox.clone(),
            Input::ScanResult(_) => unreachable!("the scenarios send no scan results"),
            Input::Tick { mailbox } => mailbox.clone(),
        };
        let state = states.entry(key).or_default();
        let (got, shadow_trips, shadow_events) =
            split_shadow(step(state, &input, now, &world, &policy));
        let want = reference.step(&input, now);
        if shadow == Shadow::Off {
            prop_assert_eq!(&got, &want, "step {} input {:?} at {}", i, input, now);
            prop_assert!(shadow_trips.is_empty() && state.shadow().is_none());
        } else {
            // The shadow's own counting may change the state when the live side does not.
            let live = StepResult {
                state_changed: want.state_changed,
                ..got.clone()
            };
            prop_assert_eq!(&live, &want, "step {} input {:?} at {}", i, input, now);
            prop_assert!(got.state_changed || !want.state_changed);
            prop_assert_eq!(shadow_trips.len(), shadow_events.len());
        }
        if shadow == Shadow::LikeLive {
            let live_trip: Vec<(u32, bool)> = want
                .outcomes
                .iter()
                .filter_map(|o| match *o {
                    Outcome::Tripped { strike, permanent }
                    | Outcome::SimulatedTrip { strike, permanent } => Some((strike, permanent)),
                    _ => None,
                })
                .collect();
            let shadow_trip: Vec<(u32, bool)> = shadow_trips
                .iter()
                .filter_map(|o| match *o {
                    Outcome::ShadowTrip {
                        strike,
                        permanent,
                        exempt: false,
                    } => Some((strike, permanent)),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(
                &shadow_trip,
                &live_trip,
                "step {} input {:?} at {}",
                i,
                input,
                now
            );
            // Its evidence is the live block's.
            let block = want.effects.iter().find_map(|e| match e {
                Effect::Block(b) if b.state != BlockState::Unblocked => Some(b),
                _ => None,
            });
            if let (Some(b), Some(e)) = (block, shadow_events.first()) {
                let t = e.trip.as_ref().unwrap();
                prop_assert_eq!(&t.evidence_message_ids, &b.evidence_message_ids);
                prop_assert_eq!(
                    (t.blocked_at, t.blocked_until),
                    (b.blocked_at, b.blocked_until)
                );
            }
        }
        if let Input::Verdict(v) = &input {
            // An ALERT_ONLY tenant's verdict never blocks or scans (it may end a block).
            if world.tenant(&v.tenant_id).mode == TenantMode::AlertOnly {
                let enforced = got.effects.iter().any(|e| {
                    matches!(
                        e,
                        Effect::Scan(_)
                            | Effect::Block(BlockRecord {
                                state: BlockState::Blocked | BlockState::PermanentlyBlocked,
                                ..
                            })
                    )
                });
                prop_assert!(!enforced, "ALERT_ONLY verdict enforced: {:?}", got);
            }
            // CLEAN never changes anything (beyond what any input's lazy expiry does).
            let expiry = got
                .outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Unblocked | Outcome::IncidentClosed { .. }));
            if v.verdict == VerdictKind::Clean && !expiry {
                prop_assert!(!got.state_changed);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES=20000 for a longer soak.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(400),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_matches_the_naive_reference((policy, b_threshold, b_base, b_warn, ops) in scenario()) {
        run(policy, b_threshold, b_base, b_warn, ops)?;
    }

    /// Any shadow beside the live policy changes nothing the live policy does.
    #[test]
    fn a_shadow_changes_nothing_live(
        (policy, b_threshold, b_base, b_warn, ops) in scenario(),
        threshold in 1..6u32,
        window in 100..3_000i64,
        base in 100..3_000i64,
        perm in 1..6u32,
    ) {
        let mut candidate = Policy {
            threshold,
            window_ms: window,
            base_block_ms: base,
            permanent_strike: perm,
            ..policy.clone()
        };
        candidate.state_idle_ttl_ms = policy.state_idle_ttl_ms;
        candidate.allowed_lateness_ms = candidate
            .allowed_lateness_ms
            .min(policy.state_idle_ttl_ms - window);
        prop_assume!(candidate.validate().is_ok());
        run_with(policy, b_threshold, b_base, b_warn, ops, Shadow::Candidate(candidate))?;
    }

    /// A shadow with the live policy's own numbers trips exactly when the live policy trips,
    /// with the same strike, evidence and block.
    #[test]
    fn a_shadow_with_the_live_numbers_trips_exactly_when_live_trips(
        (policy, b_threshold, b_base, b_warn, ops) in scenario(),
    ) {
        let ops = ops
            .into_iter()
            .filter(|o| !matches!(o, Op::Command(..) | Op::SwitchMode))
            .collect();
        run_with(policy, b_threshold, b_base, b_warn, ops, Shadow::LikeLive)?;
    }
}

/// An ALERT_ONLY burst: simulated strikes 1 and 2, then ENFORCE starts the real ladder at
/// strike 1 (guards the reference itself).
#[test]
fn reference_simulates_then_enforces_from_strike_one() {
    let policy = Policy {
        base_block_ms: 1_000,
        ..Policy::default()
    };
    let mut ops: Vec<Op> = (0..5).map(|_| Op::New(2, 0, 1)).collect();
    ops.push(Op::Advance(2_000));
    ops.extend((0..5).map(|_| Op::New(2, 0, 1)));
    ops.push(Op::SwitchMode);
    ops.push(Op::Advance(5_000));
    ops.extend((0..5).map(|_| Op::New(2, 0, 1)));
    run(policy, 3, 1_000, None, ops).unwrap();
}

/// The reference and the core agree on a scripted burst too (guards the reference itself).
#[test]
fn reference_trips_on_a_plain_burst() {
    let policy = Policy::default();
    let ops: Vec<Op> = (0..5).map(|_| Op::New(0, 0, 1)).collect();
    run(policy, 3, 1_000, None, ops).unwrap();
}
