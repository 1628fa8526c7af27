//! [`step`]: one input applied to one mailbox's state. The rules are in the module docs of
//! [`crate::policy`].

use super::commands;
use super::config::Policy;
use super::exemptions;
use super::ids;
use super::incidents;
use super::ladder::Applied;
use super::model::{
    Alert, AlertKind, BlockState, Directory, Effect, EventKind, Input, Millis, Outcome, Owner,
    ScanRequest, ScanSkipReason, StepResult, TenantMode, TenantSettings, TripFacts, Verdict,
};
use super::records::{self, Events, Notice};
use super::shadow;
use super::state::{CurrentBlock, MailboxState, Simulated};
use super::text;
use super::window::Evidence;

/// Applies one input to one mailbox's state at processor time `now`.
///
/// Deterministic: the result depends only on the arguments. `policy` is the global policy; the
/// tenant's overrides are applied here (`dir.tenant` is consulted only when an offending verdict
/// is counted; `dir.owner` / `dir.devices` only on a trip). A `CLEAN` verdict on a mailbox without
/// a block costs no lookup, no allocation beyond the result and no state change.
pub fn step(
    state: &mut MailboxState,
    input: &Input,
    now: Millis,
    dir: &dyn Directory,
    policy: &Policy,
) -> StepResult {
    let mut r = StepResult::default();
    match input {
        Input::Verdict(v) => {
            if state.block.is_some() {
                expire_if_due(state, &v.mailbox, now, &mut r);
            }
            if !state.exemptions.is_empty() {
                exemptions::expire_if_due(state, now, &mut r);
            }
            if !state.incidents.is_empty() {
                incidents::expire_if_due(state, &v.mailbox, now, dir, &mut r);
            }
            if v.verdict.is_offending() {
                verdict(state, v, now, dir, policy, &mut r);
            } else {
                r.outcomes.push(Outcome::NotOffending);
            }
        }
        Input::Command(c) => {
            expire_if_due(state, &c.mailbox, now, &mut r);
            exemptions::expire_if_due(state, now, &mut r);
            incidents::expire_if_due(state, &c.mailbox, now, dir, &mut r);
            commands::apply(state, c, now, dir, &mut r);
        }
        Input::ScanResult(res) => {
            // Routed by its mailbox (checked against the key by the pipeline).
            let mailbox = res.mailbox.as_deref().unwrap_or_default();
            expire_if_due(state, mailbox, now, &mut r);
            exemptions::expire_if_due(state, now, &mut r);
            incidents::expire_if_due(state, mailbox, now, dir, &mut r);
            incidents::result(state, mailbox, res, now, dir, &mut r);
        }
        Input::Tick { mailbox } => {
            let unblocked = expire_if_due(state, mailbox, now, &mut r);
            let expired = exemptions::expire_if_due(state, now, &mut r);
            let closed = incidents::expire_if_due(state, mailbox, now, dir, &mut r);
            if !(unblocked || expired || closed) {
                r.outcomes.push(Outcome::Idle);
            }
        }
    }
    r
}

/// Rule 1, lazy expiry: ends a timed block whose `blocked_until` is at or before `now`.
/// Returns whether it did.
fn expire_if_due(state: &mut MailboxState, mailbox: &str, now: Millis, r: &mut StepResult) -> bool {
    let until = match &state.block {
        Some(CurrentBlock {
            blocked_until: Some(u),
            ..
        }) if now >= *u => *u,
        _ => return false,
    };
    let Some(block) = state.block.take() else {
        return false;
    };
    let incident = block.incident_id.to_string();
    let detail = text::unblocked_detail(block.strike, until);
    r.effects.push(records::block_record(
        mailbox,
        &state.tenant_id,
        block,
        BlockState::Unblocked,
        now,
    ));
    let events = Events {
        mailbox,
        tenant_id: &state.tenant_id,
        incident_id: Some(&incident),
        id_source: &incident,
        now,
    };
    r.effects
        .push(events.event(EventKind::MailboxUnblocked, "", detail));
    state.last_block_end = Some(until);
    state.touched_at = now;
    r.state_changed = true;
    r.outcomes.push(Outcome::Unblocked);
    true
}

/// An offending verdict: rules 3 to 9, in order, then the shadow's rule 12 (on the same clamped
/// `sent_at`; the tenant is looked up at most once for both).
fn verdict(
    state: &mut MailboxState,
    v: &Verdict,
    now: Millis,
    dir: &dyn Directory,
    policy: &Policy,
    r: &mut StepResult,
) {
    let sent = clamp(v.sent_at, now, policy, r);
    let tenant = live_verdict(state, v, sent, now, dir, policy, r);
    match policy.shadow.as_deref() {
        Some(shadow) => {
            let ttl = policy.state_idle_ttl_ms;
            shadow::verdict(state, v, sent, now, dir, tenant, shadow, ttl, r);
        }
        None if state.shadow.is_some() => {
            // The shadow was turned off: its state describes nothing in force.
            state.shadow = None;
            r.state_changed = true;
        }
        None => {}
    }
}

/// Rules 4 to 9 for a verdict sent at `sent` (clamped); the tenant's settings, if they were
/// looked up.
fn live_verdict(
    state: &mut MailboxState,
    v: &Verdict,
    sent: Millis,
    now: Millis,
    dir: &dyn Directory,
    policy: &Policy,
    r: &mut StepResult,
) -> Option<TenantSettings> {
    reset_if_idle(state, now, policy);
    let not_counted = blocked(state, sent)
        .or_else(|| late(state, sent, policy))
        .or_else(|| duplicate(state, v));
    if let Some(outcome) = not_counted {
        r.outcomes.push(outcome);
        return None;
    }
    let tenant = dir.tenant(&v.tenant_id);
    let simulate = tenant.mode == TenantMode::AlertOnly;
    if simulate {
        if let Some(outcome) = simulated_blocked(state, sent) {
            r.outcomes.push(outcome);
            return Some(tenant);
        }
    } else {
        // The would-be ladder described a mode no longer in force (rule 9a).
        state.sim = None;
    }
    let p = policy.with_overrides(&tenant.overrides);
    let Some(evidence) = count(state, v, sent, now, &p, r) else {
        return Some(tenant);
    };
    if let Some(e) = exemptions::matching(state, v, now, dir) {
        // What the trip would have applied without the exemption (its ladder, real or not).
        let (strikes, last_end) = match (&state.sim, simulate) {
            (Some(sim), true) => (sim.strikes, sim.until),
            _ => (state.strikes, state.last_block_end),
        };
        let would = Applied::next(&p, strikes, last_end, evidence.blocked_at, now);
        exemptions::exempt_trip(state, v, &e, facts(&would, evidence, true), now, r);
        return Some(tenant);
    }
    if simulate {
        simulated_trip(state, v, evidence, now, &p, r);
        return Some(tenant);
    }
    let (block, applied) = trip(state, &v.mailbox, &evidence, now, &p);
    let (incident, strike) = (block.incident_id, block.strike);
    let targets = scan_targets(&tenant, dir, &v.mailbox);
    trip_effects(block, facts(&applied, evidence, false), &targets, v, now, r);
    if targets.skipped.is_none() {
        let timeout = p.scan_result_timeout_ms;
        incidents::open(
            state,
            &v.mailbox,
            &v.tenant_id,
            incident,
            strike,
            &targets.devices,
            now,
            timeout,
            dir,
            r,
        );
    }
    Some(tenant)
}

/// Rule 5 under `ALERT_ONLY`: a verdict that the would-be block would have kept from counting.
fn simulated_blocked(state: &MailboxState, sent: Millis) -> Option<Outcome> {
    let sim = state.sim.as_ref()?;
    sim.until
        .is_none_or(|u| sent < u)
        .then_some(Outcome::IgnoredWhileBlocked)
}

/// Rule 3, clamp: a `sent_at` too far ahead of the clock is the clock.
fn clamp(sent_at: Millis, now: Millis, policy: &Policy, r: &mut StepResult) -> Millis {
    if sent_at > now.saturating_add(policy.max_future_skew_ms) {
        r.clamped = true;
        return now;
    }
    sent_at
}

/// Rule 4, idle TTL (processor time): a state without strikes or block, untouched for longer
/// than the TTL, is as good as new.
fn reset_if_idle(state: &mut MailboxState, now: Millis, policy: &Policy) {
    if state.is_idle_expired(now, policy) {
        state.window.clear();
        state.warned_through = None;
        state.counting_floor = None;
        state.last_block_end = None;
    }
}

/// Rule 5, blocked: a permanent block in force, or sent before the counting floor.
fn blocked(state: &MailboxState, sent: Millis) -> Option<Outcome> {
    (state.block.as_ref().is_some_and(CurrentBlock::is_permanent)
        || state.counting_floor.is_some_and(|f| sent < f))
    .then_some(Outcome::IgnoredWhileBlocked)
}

/// Rule 6, late: older than the window's newest `sent_at` by more than the allowed lateness.
fn late(state: &MailboxState, sent: Millis, policy: &Policy) -> Option<Outcome> {
    state
        .window
        .is_late(sent, policy.allowed_lateness_ms)
        .then_some(Outcome::Late)
}

/// Rule 7, duplicate: the `message_id` is in the window already.
fn duplicate(state: &MailboxState, v: &Verdict) -> Option<Outcome> {
    state
        .window
        .contains(&v.message_id)
        .then_some(Outcome::Duplicate)
}

/// The trip `applied` with its evidence, as data.
fn facts(applied: &Applied, evidence: Evidence, exempt: bool) -> TripFacts {
    applied.facts(
        evidence.first_sent_at,
        evidence.blocked_at,
        evidence.message_ids,
        exempt,
    )
}

/// Rule 8, count, under the tenant's policy `p`: the trip's evidence, if the verdict trips (the
/// window is then emptied).
fn count(
    state: &mut MailboxState,
    v: &Verdict,
    sent: Millis,
    now: Millis,
    p: &Policy,
    r: &mut StepResult,
) -> Option<Evidence> {
    let i = state.window.insert(sent, &v.message_id);
    state.touched_at = now;
    if state.tenant_id != v.tenant_id {
        state.tenant_id.clear();
        state.tenant_id.push_str(&v.tenant_id);
    }
    r.state_changed = true;
    let Some(group) = state.window.trip_containing(i, p.threshold, p.window_ms) else {
        r.outcomes.push(Outcome::Counted);
        warn_if_due(state, v, i, now, p, r);
        state.window.prune(p.allowed_lateness_ms, p.window_ms);
        return None;
    };
    let evidence = state.window.take_run(group)?;
    state.warned_through = None;
    Some(evidence)
}

/// Rule 8a, early warning: the new entry (index `i`) completes a run of `warn_threshold`
/// entries within the window, all sent after the run of the last warning → alert `WARNING` and
/// event `MAILBOX_WARNED`, ids from the run's last `sent_at`.
fn warn_if_due(
    state: &mut MailboxState,
    v: &Verdict,
    i: usize,
    now: Millis,
    p: &Policy,
    r: &mut StepResult,
) {
    let Some(w) = p.warn_at() else { return };
    let Some(run) = state
        .window
        .run_containing_after(i, w, p.window_ms, state.warned_through)
    else {
        return;
    };
    let entries = &state.window.entries()[run];
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return;
    };
    let through = last.sent_at;
    Notice {
        mailbox: &v.mailbox,
        tenant_id: &v.tenant_id,
        id: ids::warning_id(&v.mailbox, through),
        kind: AlertKind::Warning,
        strike: state.strikes,
        state: state.block_state(),
        blocked_until: None,
        summary: text::warning_summary(&v.mailbox, w, p.threshold, first.sent_at, through),
        event: (
            EventKind::MailboxWarned,
            text::warned_detail(w, p.threshold, first.sent_at, through),
        ),
        trip: None,
        now,
    }
    .push(&mut r.effects);
    state.warned_through = Some(through);
    r.outcomes.push(Outcome::Warned);
}

/// Rule 9, trip: the strike (after decay) and the ladder's block, now in force.
fn trip(
    state: &mut MailboxState,
    mailbox: &str,
    evidence: &Evidence,
    now: Millis,
    p: &Policy,
) -> (CurrentBlock, Applied) {
    let blocked_at = evidence.blocked_at;
    let applied = Applied::next(p, state.strikes, state.last_block_end, blocked_at, now);
    let (strike, until) = (applied.strike, applied.until);
    state.strikes = strike;
    if let Some(u) = until {
        state.counting_floor = Some(u);
        state.last_block_end = Some(u);
    }
    let block = CurrentBlock {
        strike,
        blocked_at,
        blocked_until: until,
        incident_id: ids::incident_id(mailbox, strike, blocked_at),
        evidence_message_ids: evidence.message_ids.clone(),
    };
    state.block = Some(block.clone());
    (block, applied)
}

/// Rule 9 under `ALERT_ONLY`: the would-be ladder advances as the real one would (decay from
/// the end of the last would-be block), nothing is blocked or scanned; effects: `Alert`
/// (SIMULATED_BLOCK) and `Event`s TRIP_SIMULATED and ALERT_SENT.
fn simulated_trip(
    state: &mut MailboxState,
    v: &Verdict,
    evidence: Evidence,
    now: Millis,
    p: &Policy,
    r: &mut StepResult,
) {
    let (strikes, last_end) = state
        .sim
        .as_ref()
        .map_or((0, None), |s| (s.strikes, s.until));
    let blocked_at = evidence.blocked_at;
    let applied = Applied::next(p, strikes, last_end, blocked_at, now);
    let (strike, until, length) = (applied.strike, applied.until, applied.length());
    state.sim = Some(Simulated {
        strikes: strike,
        until,
    });
    let n = evidence.message_ids.len();
    Notice {
        mailbox: &v.mailbox,
        tenant_id: &v.tenant_id,
        id: ids::simulated_incident_id(&v.mailbox, strike, blocked_at),
        kind: AlertKind::SimulatedBlock,
        strike,
        state: if until.is_some() {
            BlockState::Blocked
        } else {
            BlockState::PermanentlyBlocked
        },
        blocked_until: until,
        summary: text::simulated_summary(&v.mailbox, strike, length, n),
        event: (
            EventKind::TripSimulated,
            text::simulated_detail(strike, blocked_at, length, n),
        ),
        trip: Some(facts(&applied, evidence, false)),
        now,
    }
    .push(&mut r.effects);
    r.outcomes.push(Outcome::SimulatedTrip {
        strike,
        permanent: until.is_none(),
    });
}

/// Who a trip's scan requests go to, or why none does.
struct ScanTargets {
    owner: Option<Owner>,
    /// Distinct device ids, in directory order.
    devices: Vec<String>,
    skipped: Option<ScanSkipReason>,
}

/// Rule 9, scan rule (first match). The owner is looked up on every trip (the alert carries
/// it); devices only when a scan is possible.
fn scan_targets(tenant: &TenantSettings, dir: &dyn Directory, mailbox: &str) -> ScanTargets {
    let owner = dir.owner(mailbox);
    let mut devices: Vec<String> = Vec::new();
    let skipped = if !tenant.sync_security_enabled {
        Some(ScanSkipReason::SyncSecurityOff)
    } else if !tenant.endpoint_licence {
        Some(ScanSkipReason::NoEndpointLicence)
    } else if let Some(o) = &owner {
        for d in dir.devices(&o.owner_id).unwrap_or_default() {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        devices.is_empty().then_some(ScanSkipReason::NoDevices)
    } else {
        Some(ScanSkipReason::OwnerUnknown)
    };
    ScanTargets {
        owner,
        devices,
        skipped,
    }
}

/// Rule 9, the trip's effects, in order: block, scans, alert, then the events.
fn trip_effects(
    block: CurrentBlock,
    facts: TripFacts,
    targets: &ScanTargets,
    v: &Verdict,
    now: Millis,
    r: &mut StepResult,
) {
    let incident = block.incident_id.to_string();
    let trip = Trip {
        mailbox: &v.mailbox,
        tenant_id: &v.tenant_id,
        incident: block.incident_id,
        incident_s: &incident,
        strike: block.strike,
        blocked_at: block.blocked_at,
        until: block.blocked_until,
        evidence_len: block.evidence_message_ids.len(),
        facts,
        now,
    };
    let state = if trip.until.is_some() {
        BlockState::Blocked
    } else {
        BlockState::PermanentlyBlocked
    };
    r.effects.reserve(4 + 2 * targets.devices.len());
    r.effects.push(records::block_record(
        trip.mailbox,
        trip.tenant_id,
        block,
        state,
        now,
    ));
    if let Some(o) = &targets.owner {
        for d in &targets.devices {
            r.effects.push(trip.scan(&o.owner_id, d));
        }
    }
    r.effects.push(trip.alert(state, targets));
    let (strike, permanent) = (trip.strike, trip.until.is_none());
    trip.events(targets, r);
    r.outcomes.push(Outcome::Tripped { strike, permanent });
}

/// What the records of one trip share.
struct Trip<'a> {
    mailbox: &'a str,
    tenant_id: &'a str,
    incident: uuid::Uuid,
    incident_s: &'a str,
    strike: u32,
    blocked_at: Millis,
    until: Option<Millis>,
    evidence_len: usize,
    /// The trip as data, for the block event.
    facts: TripFacts,
    now: Millis,
}

impl Trip<'_> {
    fn scan(&self, owner_id: &str, device: &str) -> Effect {
        Effect::Scan(ScanRequest {
            request_id: ids::request_id(&self.incident, device).to_string(),
            incident_id: self.incident_s.to_owned(),
            tenant_id: self.tenant_id.to_owned(),
            device_id: device.to_owned(),
            owner_id: owner_id.to_owned(),
            mailbox: self.mailbox.to_owned(),
            requested_at: self.now,
        })
    }

    fn alert(&self, state: BlockState, t: &ScanTargets) -> Effect {
        let summary = text::alert_summary(
            self.mailbox,
            self.strike,
            self.until,
            self.evidence_len,
            t.devices.len(),
            t.skipped,
        );
        Effect::Alert(Alert {
            alert_id: ids::alert_id(&self.incident).to_string(),
            incident_id: self.incident_s.to_owned(),
            tenant_id: self.tenant_id.to_owned(),
            mailbox: self.mailbox.to_owned(),
            owner_id: t.owner.as_ref().map(|o| o.owner_id.clone()),
            strike: self.strike,
            state,
            blocked_until: self.until,
            devices_scanned: t.devices.clone(),
            scan_skipped_reason: t.skipped,
            summary,
            kind: AlertKind::Block,
        })
    }

    /// The block event, the scan events (one per device, or one skip) and the alert event.
    fn events(self, t: &ScanTargets, r: &mut StepResult) {
        let events = Events {
            mailbox: self.mailbox,
            tenant_id: self.tenant_id,
            incident_id: Some(self.incident_s),
            id_source: self.incident_s,
            now: self.now,
        };
        let kind = if self.until.is_some() {
            EventKind::MailboxBlocked
        } else {
            EventKind::MailboxPermanentlyBlocked
        };
        let detail =
            text::blocked_detail(self.strike, self.blocked_at, self.until, self.evidence_len);
        r.effects.push(events.trip(kind, detail, self.facts));
        match t.skipped {
            Some(reason) => {
                let detail = reason.as_str().to_owned();
                r.effects
                    .push(events.event(EventKind::ScanSkipped, "", detail));
            }
            None => {
                for d in &t.devices {
                    r.effects
                        .push(events.event(EventKind::ScanRequested, d, d.clone()));
                }
            }
        }
        let detail = text::alert_sent_detail(&ids::alert_id(&self.incident).to_string());
        r.effects
            .push(events.event(EventKind::AlertSent, "", detail));
    }
}
