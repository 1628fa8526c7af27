//! Exemptions (SPEC §1.11 and §4, rules 1b, 9b and 10b of [`crate::policy`]): `EXEMPTION_PUT` /
//! `EXEMPTION_DELETE` commands, their expiry, and whether a trip is exempt.
//!
//! An exemption lives in the state of its pattern's key (the command's key), so it is held
//! exactly once, restored with the changelog and expired by that key's timer like a block; every
//! change is also published on `mailguard.exemptions`, from which every instance learns the
//! domain patterns (`*@domain`) that live on other partitions ([`Directory::exemption`]).

use super::commands::reject;
use super::ids;
use super::model::{
    check_pattern, domain_pattern, ActorRole, AlertKind, Command, CommandKind, Directory, Effect,
    EventKind, Exemption, ExemptionChange, Millis, Outcome, StepResult, TripFacts, Verdict,
};
use super::records::{Events, Notice};
use super::state::{MailboxState, MAX_EXEMPTIONS_PER_KEY};
use super::text::{self, RejectReason};

/// Rule 10b: an exemption command on the state of its pattern's key.
pub(crate) fn command(
    state: &mut MailboxState,
    cmd: &Command,
    now: Millis,
    dir: &dyn Directory,
    r: &mut StepResult,
) {
    match rejection(state, cmd, now, dir) {
        Some(reason) => reject(state, cmd, reason, now, r),
        None if cmd.kind == CommandKind::ExemptionPut => put(state, cmd, now, r),
        None => delete(state, cmd, now, r),
    }
}

/// Why an exemption command must be rejected, checked in this order: role, pattern, then
/// (PUT) reason, expiry, the bounds (the tenant's, then the key's); (DELETE) no exemption of the
/// tenant. Tenants never see each other's exemptions: each holds its own under a shared key.
fn rejection(
    state: &MailboxState,
    cmd: &Command,
    now: Millis,
    dir: &dyn Directory,
) -> Option<RejectReason> {
    if !matches!(cmd.actor_role, ActorRole::Admin | ActorRole::Support) {
        return Some(RejectReason::RoleNotAllowed(cmd.actor_role));
    }
    if let Err(e) = check_pattern(&cmd.mailbox) {
        return Some(RejectReason::BadPattern(e));
    }
    let own = state.exemption_of(&cmd.tenant_id).is_some();
    if cmd.kind == CommandKind::ExemptionDelete {
        return (!own).then_some(RejectReason::NotExempt);
    }
    if cmd.reason.as_deref().is_none_or(|s| s.trim().is_empty()) {
        return Some(RejectReason::NoReason);
    }
    if let Some(x) = cmd.expires_at.filter(|&x| x <= now) {
        return Some(RejectReason::ExpiresInPast(x));
    }
    // Replacing one's own exemption does not add one.
    let full =
        dir.exemptions_full(&cmd.tenant_id) || state.exemptions.len() >= MAX_EXEMPTIONS_PER_KEY;
    (!own && full).then_some(RejectReason::ExemptionLimit)
}

fn events<'a>(pattern: &'a str, tenant_id: &'a str, id_source: &'a str, now: Millis) -> Events<'a> {
    Events {
        mailbox: pattern,
        tenant_id,
        incident_id: None,
        id_source,
        now,
    }
}

fn change(e: &Exemption, exemption: Option<Exemption>) -> Effect {
    Effect::Exemption(ExemptionChange {
        tenant_id: e.tenant_id.clone(),
        pattern: e.pattern.clone(),
        exemption,
    })
}

fn put(state: &mut MailboxState, cmd: &Command, now: Millis, r: &mut StepResult) {
    let e = Exemption {
        tenant_id: cmd.tenant_id.clone(),
        pattern: cmd.mailbox.clone(),
        reason: cmd.reason.clone().unwrap_or_default(),
        actor: cmd.actor.clone(),
        actor_role: cmd.actor_role,
        command_id: cmd.command_id.clone(),
        created_at: now,
        expires_at: cmd.expires_at,
    };
    let held = state
        .exemptions
        .iter()
        .position(|x| x.tenant_id == e.tenant_id);
    let detail = text::exemption_added_detail(&e, held.is_some());
    r.effects.push(change(&e, Some(e.clone())));
    r.effects.push(
        events(&cmd.mailbox, &cmd.tenant_id, &cmd.command_id, now).event(
            EventKind::ExemptionAdded,
            "",
            detail,
        ),
    );
    match held {
        Some(i) => state.exemptions[i] = e,
        None => state.exemptions.push(e),
    }
    r.state_changed = true;
    r.outcomes.push(Outcome::ExemptionAdded);
}

fn delete(state: &mut MailboxState, cmd: &Command, now: Millis, r: &mut StepResult) {
    let Some(i) = state
        .exemptions
        .iter()
        .position(|x| x.tenant_id == cmd.tenant_id)
    else {
        return;
    };
    let e = state.exemptions.remove(i);
    let detail = text::exemption_removed_detail(&e, cmd);
    r.effects.push(change(&e, None));
    r.effects.push(
        events(&cmd.mailbox, &cmd.tenant_id, &cmd.command_id, now).event(
            EventKind::ExemptionRemoved,
            "",
            detail,
        ),
    );
    r.state_changed = true;
    r.outcomes.push(Outcome::ExemptionRemoved);
}

/// Rule 1b: ends each of the key's exemptions with `now >= expires_at` (tombstone and
/// `EXEMPTION_EXPIRED`, ids from the granting command, so a replay writes the same event).
/// Returns whether any ended.
pub(crate) fn expire_if_due(state: &mut MailboxState, now: Millis, r: &mut StepResult) -> bool {
    let due = |e: &Exemption| e.expires_at.is_some_and(|x| now >= x);
    if !state.exemptions.iter().any(due) {
        return false;
    }
    let (ended, kept) = std::mem::take(&mut state.exemptions)
        .into_iter()
        .partition(|e| due(e));
    state.exemptions = kept;
    for e in ended {
        let at = e.expires_at.unwrap_or(now);
        r.effects.push(change(&e, None));
        r.effects
            .push(events(&e.pattern, &e.tenant_id, &e.command_id, now).event(
                EventKind::ExemptionExpired,
                "",
                text::exemption_expired_detail(&e, at),
            ));
        r.outcomes.push(Outcome::ExemptionExpired);
    }
    r.state_changed = true;
    true
}

/// Rule 9b: the exemption in force at `now` for the verdict's mailbox and tenant: the exact
/// one (this key's state), else its domain's (`*@domain`, exactly that domain) from the table.
pub(crate) fn matching(
    state: &MailboxState,
    v: &Verdict,
    now: Millis,
    dir: &dyn Directory,
) -> Option<Exemption> {
    if let Some(e) = state
        .exemption_of(&v.tenant_id)
        .filter(|e| e.pattern == v.mailbox && e.in_force(&v.tenant_id, now))
    {
        return Some(e.clone());
    }
    let pattern = domain_pattern(&v.mailbox)?;
    dir.exemption(&v.tenant_id, &pattern)
        .filter(|e| e.pattern == pattern && e.in_force(&v.tenant_id, now))
}

/// Rule 9b: an exempt trip: `Alert` (EXEMPT_TRIP), `Event`s TRIP_EXEMPTED and ALERT_SENT; no
/// block, scan, strike or counting floor.
pub(crate) fn exempt_trip(
    state: &MailboxState,
    v: &Verdict,
    e: &Exemption,
    trip: TripFacts,
    now: Millis,
    r: &mut StepResult,
) {
    let (blocked_at, evidence) = (trip.blocked_at, trip.evidence_message_ids.len());
    Notice {
        mailbox: &v.mailbox,
        tenant_id: &v.tenant_id,
        id: ids::exempt_trip_id(&v.mailbox, blocked_at),
        kind: AlertKind::ExemptTrip,
        strike: state.strikes,
        state: state.block_state(),
        blocked_until: None,
        summary: text::exempted_summary(&v.mailbox, e, evidence),
        event: (
            EventKind::TripExempted,
            text::exempted_detail(e, blocked_at, evidence),
        ),
        trip: Some(trip),
        now,
    }
    .push(&mut r.effects);
    r.outcomes.push(Outcome::ExemptTrip);
}
