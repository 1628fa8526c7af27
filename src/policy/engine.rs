//! [`step`]: one input applied to one mailbox's state. The rules are in the module docs of
//! [`crate::policy`].

use super::commands;
use super::config::Policy;
use super::ids;
use super::ladder::{self, Ladder};
use super::model::{
    Alert, BlockRecord, BlockState, Directory, Effect, EventKind, EventLogEntry, Input, Millis,
    Outcome, ScanRequest, ScanSkipReason, StepResult, Verdict,
};
use super::state::{CurrentBlock, MailboxState};
use super::text;

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
            if v.verdict.is_offending() {
                verdict(state, v, now, dir, policy, &mut r);
            } else {
                r.outcomes.push(Outcome::NotOffending);
            }
        }
        Input::Command(c) => {
            expire_if_due(state, &c.mailbox, now, &mut r);
            commands::apply(state, c, now, &mut r);
        }
        Input::Tick { mailbox } => {
            if !expire_if_due(state, mailbox, now, &mut r) {
                r.outcomes.push(Outcome::Idle);
            }
        }
    }
    r
}

/// Ends a timed block whose `blocked_until` is at or before `now`. Returns whether it did.
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
    r.effects.push(Effect::Block(BlockRecord {
        mailbox: mailbox.to_owned(),
        tenant_id: state.tenant_id.clone(),
        state: BlockState::Unblocked,
        strike: block.strike,
        blocked_at: block.blocked_at,
        blocked_until: Some(until),
        incident_id: incident.clone(),
        evidence_message_ids: block.evidence_message_ids,
        updated_at: now,
    }));
    r.effects.push(Effect::Event(EventLogEntry {
        event_id: ids::event_id(mailbox, &incident, EventKind::MailboxUnblocked, "").to_string(),
        incident_id: Some(incident),
        tenant_id: state.tenant_id.clone(),
        mailbox: mailbox.to_owned(),
        kind: EventKind::MailboxUnblocked,
        at: now,
        detail: text::unblocked_detail(block.strike, until),
        reason: None,
    }));
    state.last_block_end = Some(until);
    state.touched_at = now;
    r.state_changed = true;
    r.outcomes.push(Outcome::Unblocked);
    true
}

fn verdict(
    state: &mut MailboxState,
    v: &Verdict,
    now: Millis,
    dir: &dyn Directory,
    policy: &Policy,
    r: &mut StepResult,
) {
    let mut sent = v.sent_at;
    if sent > now.saturating_add(policy.max_future_skew_ms) {
        sent = now;
        r.clamped = true;
    }
    // Processor-time idle TTL: a state without strikes or block, untouched for longer than the
    // TTL, is as good as new.
    if state.is_idle_expired(now, policy) {
        state.window.clear();
        state.counting_floor = None;
        state.last_block_end = None;
    }
    if state.block.as_ref().is_some_and(CurrentBlock::is_permanent)
        || state.counting_floor.is_some_and(|f| sent < f)
    {
        r.outcomes.push(Outcome::IgnoredWhileBlocked);
        return;
    }
    if state.window.is_late(sent, policy.allowed_lateness_ms) {
        r.outcomes.push(Outcome::Late);
        return;
    }
    if state.window.contains(&v.message_id) {
        r.outcomes.push(Outcome::Duplicate);
        return;
    }
    let tenant = dir.tenant(&v.tenant_id);
    let p = policy.with_overrides(&tenant.overrides);
    let i = state.window.insert(sent, &v.message_id);
    state.touched_at = now;
    if state.tenant_id != v.tenant_id {
        state.tenant_id.clear();
        state.tenant_id.push_str(&v.tenant_id);
    }
    r.state_changed = true;
    let Some(group) = state.window.trip_containing(i, p.threshold, p.window_ms) else {
        state.window.prune(p.allowed_lateness_ms, p.window_ms);
        r.outcomes.push(Outcome::Counted);
        return;
    };

    // Trip.
    let entries = &state.window.entries()[group];
    let blocked_at = entries.last().map_or(sent, |e| e.sent_at);
    let evidence: Vec<String> = entries.iter().map(|e| e.message_id.to_string()).collect();
    state.window.clear();
    let before = ladder::decayed_strikes(
        state.strikes,
        state.last_block_end,
        blocked_at,
        p.strike_decay_ms,
    );
    let strike = before.saturating_add(1);
    let until = match ladder::block_for(&p, strike, blocked_at) {
        Ladder::Until(u) => Some(u),
        Ladder::Permanent => None,
    };
    let incident = ids::incident_id(&v.mailbox, strike, blocked_at);
    let incident_s = incident.to_string();
    let block_state = if until.is_some() {
        BlockState::Blocked
    } else {
        BlockState::PermanentlyBlocked
    };
    state.strikes = strike;
    if let Some(u) = until {
        state.counting_floor = Some(u);
        state.last_block_end = Some(u);
    }
    state.block = Some(CurrentBlock {
        strike,
        blocked_at,
        blocked_until: until,
        incident_id: incident,
        evidence_message_ids: evidence.clone(),
    });

    // Scan targets.
    let owner = dir.owner(&v.mailbox);
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

    let mailbox = v.mailbox.as_str();
    let tenant_id = v.tenant_id.as_str();
    let event = |kind: EventKind, disc: &str, detail: String| {
        Effect::Event(EventLogEntry {
            event_id: ids::event_id(mailbox, &incident_s, kind, disc).to_string(),
            incident_id: Some(incident_s.clone()),
            tenant_id: tenant_id.to_owned(),
            mailbox: mailbox.to_owned(),
            kind,
            at: now,
            detail,
            reason: None,
        })
    };
    let evidence_len = evidence.len();
    r.effects.reserve(4 + 2 * devices.len());
    r.effects.push(Effect::Block(BlockRecord {
        mailbox: mailbox.to_owned(),
        tenant_id: tenant_id.to_owned(),
        state: block_state,
        strike,
        blocked_at,
        blocked_until: until,
        incident_id: incident_s.clone(),
        evidence_message_ids: evidence,
        updated_at: now,
    }));
    if let Some(o) = &owner {
        for d in &devices {
            r.effects.push(Effect::Scan(ScanRequest {
                request_id: ids::request_id(&incident, d).to_string(),
                incident_id: incident_s.clone(),
                tenant_id: tenant_id.to_owned(),
                device_id: d.clone(),
                owner_id: o.owner_id.clone(),
                mailbox: mailbox.to_owned(),
                requested_at: now,
            }));
        }
    }
    r.effects.push(Effect::Alert(Alert {
        alert_id: ids::alert_id(&incident).to_string(),
        incident_id: incident_s.clone(),
        tenant_id: tenant_id.to_owned(),
        mailbox: mailbox.to_owned(),
        owner_id: owner.as_ref().map(|o| o.owner_id.clone()),
        strike,
        state: block_state,
        blocked_until: until,
        devices_scanned: devices.clone(),
        scan_skipped_reason: skipped,
        summary: text::alert_summary(mailbox, strike, until, evidence_len, devices.len(), skipped),
    }));
    let block_kind = if until.is_some() {
        EventKind::MailboxBlocked
    } else {
        EventKind::MailboxPermanentlyBlocked
    };
    r.effects.push(event(
        block_kind,
        "",
        text::blocked_detail(strike, blocked_at, until, evidence_len),
    ));
    match skipped {
        Some(reason) => r.effects.push(event(
            EventKind::ScanSkipped,
            "",
            reason.as_str().to_owned(),
        )),
        None => {
            for d in &devices {
                r.effects
                    .push(event(EventKind::ScanRequested, d, d.clone()));
            }
        }
    }
    r.effects.push(event(
        EventKind::AlertSent,
        "",
        text::alert_sent_detail(&ids::alert_id(&incident).to_string()),
    ));
    r.outcomes.push(Outcome::Tripped {
        strike,
        permanent: until.is_none(),
    });
}
