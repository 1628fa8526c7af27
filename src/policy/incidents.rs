//! Incidents that end (rules 9c, 11 and 1c of [`crate::policy`]): a trip that requested scans
//! opens an incident in the mailbox's state; each device's `ScanResult` is recorded once; the
//! incident closes as `REMEDIATED` when every device reported `CLEAN` or `THREATS_REMOVED`, as
//! `NEEDS_ATTENTION` when any reported otherwise or did not report by the deadline
//! (`scan.result_timeout_ms`, processor time). Closing touches no block: remediation never
//! shortens one.

use uuid::Uuid;

use super::ids;
use super::model::{
    Alert, AlertKind, Directory, Effect, EventKind, Millis, Outcome, ScanIgnored, ScanResult,
    StepResult,
};
use super::records::Events;
use super::state::{MailboxState, OpenIncident, MAX_OPEN_INCIDENTS};
use super::text;

/// Discriminator of the `ALERT_SENT` event of an incident's end (the block's alert has "").
const UPDATE: &str = "INCIDENT_UPDATE";

/// Rule 9c: a trip that requested scans for `devices` (distinct, at least one) opens its
/// incident, due at `now + timeout`. At [`MAX_OPEN_INCIDENTS`] the oldest open one is closed
/// first, as overdue.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open(
    state: &mut MailboxState,
    mailbox: &str,
    tenant_id: &str,
    incident_id: Uuid,
    strike: u32,
    devices: &[String],
    now: Millis,
    timeout: Millis,
    dir: &dyn Directory,
    r: &mut StepResult,
) {
    if devices.is_empty() {
        return;
    }
    if state.incidents.len() >= MAX_OPEN_INCIDENTS {
        close(state, 0, mailbox, true, now, dir, r);
    }
    state.incidents.push(OpenIncident {
        incident_id,
        tenant_id: tenant_id.to_owned(),
        strike,
        opened_at: now,
        deadline: now.saturating_add(timeout),
        devices: u32::try_from(devices.len()).unwrap_or(u32::MAX),
        remediated: 0,
        attention: 0,
        threats: 0,
        pending: devices
            .iter()
            .map(|d| ids::request_id(&incident_id, d))
            .collect(),
        reported: Vec::new(),
    });
}

/// Rule 1c: closes every open incident whose deadline is at or before `now` as overdue.
/// Returns whether it closed any.
pub(crate) fn expire_if_due(
    state: &mut MailboxState,
    mailbox: &str,
    now: Millis,
    dir: &dyn Directory,
    r: &mut StepResult,
) -> bool {
    let mut any = false;
    while let Some(i) = state.incidents.iter().position(|i| now >= i.deadline) {
        close(state, i, mailbox, true, now, dir, r);
        any = true;
    }
    any
}

/// Rule 11: a scan result. It counts only for a device an open incident of this mailbox waits
/// for, under the incident's tenant, with the request id mailguard made for that device;
/// anything else is [`Outcome::ScanResultIgnored`] with no effect and no state change.
pub(crate) fn result(
    state: &mut MailboxState,
    mailbox: &str,
    res: &ScanResult,
    now: Millis,
    dir: &dyn Directory,
    r: &mut StepResult,
) {
    let found = match find(state, res) {
        Ok(found) => found,
        Err(why) => {
            r.outcomes.push(Outcome::ScanResultIgnored(why));
            return;
        }
    };
    let (i, k) = found;
    let inc = &mut state.incidents[i];
    let request = inc.pending.swap_remove(k);
    inc.reported.push(request);
    if res.status.is_remediated() {
        inc.remediated = inc.remediated.saturating_add(1);
    } else {
        inc.attention = inc.attention.saturating_add(1);
    }
    let threats = u32::try_from(res.threats.len()).unwrap_or(u32::MAX);
    inc.threats = inc.threats.saturating_add(threats);
    let incident = inc.incident_id.to_string();
    let events = events(mailbox, &inc.tenant_id, &incident, now);
    let detail = text::scan_completed_detail(&res.device_id, res.status, res.threats.len());
    r.effects
        .push(events.event(EventKind::ScanCompleted, &res.device_id, detail));
    r.outcomes.push(Outcome::ScanCompleted);
    let done = inc.pending.is_empty();
    state.touched_at = now;
    r.state_changed = true;
    if done {
        close(state, i, mailbox, false, now, dir, r);
    }
}

/// The events of an incident: its tenant, ids from the incident.
fn events<'a>(mailbox: &'a str, tenant_id: &'a str, incident: &'a str, now: Millis) -> Events<'a> {
    Events {
        mailbox,
        tenant_id,
        incident_id: Some(incident),
        id_source: incident,
        now,
    }
}

/// The open incident (index) and its pending request (index) a result answers, or why none.
fn find(state: &MailboxState, res: &ScanResult) -> Result<(usize, usize), ScanIgnored> {
    let unknown = ScanIgnored::UnknownRequest;
    let incident = Uuid::parse_str(&res.incident_id).map_err(|_| unknown)?;
    let request = Uuid::parse_str(&res.request_id).map_err(|_| unknown)?;
    let i = state
        .incidents
        .iter()
        .position(|i| i.incident_id == incident)
        .ok_or(unknown)?;
    let inc = &state.incidents[i];
    if inc.tenant_id != res.tenant_id {
        return Err(ScanIgnored::OtherTenant);
    }
    // The request id names the device: a result naming another device is not this request's.
    if ids::request_id(&incident, &res.device_id) != request {
        return Err(unknown);
    }
    match inc.pending.iter().position(|p| *p == request) {
        Some(k) => Ok((i, k)),
        None if inc.reported.contains(&request) => Err(ScanIgnored::Duplicate),
        None => Err(unknown),
    }
}

/// Ends incident `i`: `SCAN_OVERDUE` (if devices are still pending), the `INCIDENT_UPDATE`
/// alert, `INCIDENT_REMEDIATED` or `INCIDENT_NEEDS_ATTENTION`, and `ALERT_SENT`; ids from the
/// incident, so a replay writes the same records.
fn close(
    state: &mut MailboxState,
    i: usize,
    mailbox: &str,
    overdue: bool,
    now: Millis,
    dir: &dyn Directory,
    r: &mut StepResult,
) {
    let inc = state.incidents.remove(i);
    let incident = inc.incident_id.to_string();
    let events = events(mailbox, &inc.tenant_id, &incident, now);
    if !inc.pending.is_empty() {
        let by = inc.deadline.min(now);
        let detail = text::scan_overdue_detail(inc.pending.len(), inc.devices, by);
        r.effects
            .push(events.event(EventKind::ScanOverdue, "", detail));
    }
    let remediated = inc.pending.is_empty() && inc.attention == 0;
    let detail = text::incident_detail(
        remediated,
        inc.devices,
        inc.remediated,
        inc.attention,
        inc.threats,
    );
    // The block in force, if it is this incident's (a later trip may have replaced it).
    let block = state
        .block
        .as_ref()
        .filter(|b| b.incident_id == inc.incident_id);
    let alert_id = ids::incident_update_alert_id(&inc.incident_id).to_string();
    r.effects.push(Effect::Alert(Alert {
        alert_id: alert_id.clone(),
        incident_id: incident.clone(),
        tenant_id: inc.tenant_id.clone(),
        mailbox: mailbox.to_owned(),
        owner_id: dir.owner(mailbox).map(|o| o.owner_id),
        strike: inc.strike,
        state: state.block_state(),
        blocked_until: block.and_then(|b| b.blocked_until),
        devices_scanned: Vec::new(),
        scan_skipped_reason: None,
        summary: text::incident_summary(mailbox, &detail),
        kind: AlertKind::IncidentUpdate,
    }));
    let kind = if remediated {
        EventKind::IncidentRemediated
    } else {
        EventKind::IncidentNeedsAttention
    };
    r.effects.push(events.event(kind, "", detail));
    r.effects.push(events.event(
        EventKind::AlertSent,
        UPDATE,
        text::alert_sent_detail(&alert_id),
    ));
    state.touched_at = now;
    r.state_changed = true;
    r.outcomes.push(Outcome::IncidentClosed {
        remediated,
        overdue,
    });
}
