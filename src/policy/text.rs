//! The human-readable strings of the effects (`detail` of events, `summary` of alerts). Kept in
//! one place so their wording can change without touching the rules, and so tests can build the
//! expected records.

use super::model::{
    ActorRole, Command, Exemption, Millis, PatternError, RejectCode, ScanSkipReason, ScanStatus,
};

/// `2023-11-14T22:13:20.000Z` (proleptic Gregorian, UTC) for a millisecond timestamp.
pub fn iso8601(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days, in i128 so no input overflows.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn until_text(until: Option<Millis>) -> String {
    match until {
        Some(u) => format!("until {}", iso8601(u)),
        None => "permanently".to_owned(),
    }
}

/// Detail of `MAILBOX_BLOCKED` / `MAILBOX_PERMANENTLY_BLOCKED`.
pub fn blocked_detail(
    strike: u32,
    blocked_at: Millis,
    until: Option<Millis>,
    evidence: usize,
) -> String {
    format!(
        "strike {strike}: blocked {} after {evidence} offending messages, the last sent at {}",
        until_text(until),
        iso8601(blocked_at)
    )
}

/// `summary` of an alert.
pub fn alert_summary(
    mailbox: &str,
    strike: u32,
    until: Option<Millis>,
    evidence: usize,
    devices_scanned: usize,
    skipped: Option<ScanSkipReason>,
) -> String {
    let scan = match skipped {
        Some(r) => format!("no scan requested ({})", r.as_str()),
        None => format!("scan requested on {devices_scanned} device(s)"),
    };
    format!(
        "Mailbox {mailbox} sent {evidence} spam/virus messages within the window and is blocked {} (strike {strike}); {scan}.",
        until_text(until)
    )
}

/// Detail of `ALERT_SENT`.
pub fn alert_sent_detail(alert_id: &str) -> String {
    format!("alert {alert_id} sent to the tenant administrator")
}

/// Detail of `MAILBOX_UNBLOCKED` (a timed block ended by itself).
pub fn unblocked_detail(strike: u32, until: Millis) -> String {
    format!("strike {strike}: timed block ended at {}", iso8601(until))
}

/// A block length as a person reads it: `4 h`, `90 min`, `30 s` or `1500 ms`.
pub fn length_text(ms: Millis) -> String {
    const UNITS: [(Millis, &str); 3] = [(3_600_000, "h"), (60_000, "min"), (1_000, "s")];
    for (unit, name) in UNITS {
        if ms != 0 && ms % unit == 0 {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}

fn would_block(length: Option<Millis>) -> String {
    match length {
        Some(l) => format!("for {}", length_text(l)),
        None => "permanently".to_owned(),
    }
}

/// Detail of `TRIP_SIMULATED`: the strike and block length enforcement would have applied.
pub fn simulated_detail(
    strike: u32,
    blocked_at: Millis,
    length: Option<Millis>,
    evidence: usize,
) -> String {
    format!(
        "strike {strike}: would be blocked {} after {evidence} offending messages, the last sent at {}; \
         the tenant is ALERT_ONLY: nothing was blocked or scanned",
        would_block(length),
        iso8601(blocked_at)
    )
}

/// Detail of `SHADOW_TRIP`: what the shadow policy would have done.
pub fn shadow_detail(t: &super::model::TripFacts) -> String {
    let n = t.evidence_message_ids.len();
    let exempt = if t.exempt {
        "; the mailbox is exempt, so it would have blocked nothing"
    } else {
        ""
    };
    format!(
        "shadow policy, strike {}: would block {} after {n} offending messages sent from {} to {}{exempt};          nothing was blocked, scanned or alerted",
        t.strike,
        would_block(t.block_ms),
        iso8601(t.first_sent_at),
        iso8601(t.blocked_at)
    )
}

/// `summary` of a `SIMULATED_BLOCK` alert.
pub fn simulated_summary(
    mailbox: &str,
    strike: u32,
    length: Option<Millis>,
    evidence: usize,
) -> String {
    format!(
        "Mailbox {mailbox} sent {evidence} spam/virus messages within the window; enforcement would block it {} (strike {strike}). The tenant is ALERT_ONLY: nothing was blocked or scanned.",
        would_block(length)
    )
}

/// Detail of `MAILBOX_WARNED`.
pub fn warned_detail(warn: u32, threshold: u32, first: Millis, last: Millis) -> String {
    format!(
        "{warn} offending messages sent from {} to {}; {threshold} within the window block the mailbox",
        iso8601(first),
        iso8601(last)
    )
}

/// `summary` of a `WARNING` alert.
pub fn warning_summary(
    mailbox: &str,
    warn: u32,
    threshold: u32,
    first: Millis,
    last: Millis,
) -> String {
    format!(
        "Early warning: mailbox {mailbox} sent {warn} spam/virus messages between {} and {}; at {threshold} within the window it is blocked.",
        iso8601(first),
        iso8601(last)
    )
}

/// Detail of `SUPPORT_UNBLOCK`.
pub fn support_unblock_detail(cmd: &Command) -> String {
    format!(
        "permanent block lifted by {} (role {}), ticket {}; strikes reset to 0 (command {})",
        cmd.actor,
        cmd.actor_role.as_str(),
        cmd.ticket,
        cmd.command_id
    )
}

fn expiry_text(expires_at: Option<Millis>) -> String {
    match expires_at {
        Some(x) => format!("until {}", iso8601(x)),
        None => "without expiry".to_owned(),
    }
}

/// Detail of `EXEMPTION_ADDED`.
pub fn exemption_added_detail(e: &Exemption, replaced: bool) -> String {
    format!(
        "exemption {} {} by {} (role {}), reason: {}{} (command {})",
        e.pattern,
        expiry_text(e.expires_at),
        e.actor,
        e.actor_role.as_str(),
        e.reason,
        if replaced {
            "; replaces the previous one"
        } else {
            ""
        },
        e.command_id
    )
}

/// Detail of `EXEMPTION_REMOVED`.
pub fn exemption_removed_detail(e: &Exemption, cmd: &Command) -> String {
    format!(
        "exemption {} (granted by {}, reason: {}) removed by {} (role {}), reason: {} (command {})",
        e.pattern,
        e.actor,
        e.reason,
        cmd.actor,
        cmd.actor_role.as_str(),
        cmd.reason.as_deref().unwrap_or(""),
        cmd.command_id
    )
}

/// Detail of `EXEMPTION_EXPIRED`.
pub fn exemption_expired_detail(e: &Exemption, at: Millis) -> String {
    format!(
        "exemption {} (granted by {} (role {}), reason: {}) expired at {}",
        e.pattern,
        e.actor,
        e.actor_role.as_str(),
        e.reason,
        iso8601(at)
    )
}

/// Detail of `TRIP_EXEMPTED`.
pub fn exempted_detail(e: &Exemption, blocked_at: Millis, evidence: usize) -> String {
    format!(
        "tripped after {evidence} offending messages, the last sent at {}; exempt by {} ({}, granted by {}, reason: {}): nothing was blocked or scanned",
        iso8601(blocked_at),
        e.pattern,
        expiry_text(e.expires_at),
        e.actor,
        e.reason
    )
}

/// `summary` of an `EXEMPT_TRIP` alert.
pub fn exempted_summary(mailbox: &str, e: &Exemption, evidence: usize) -> String {
    format!(
        "Mailbox {mailbox} sent {evidence} spam/virus messages within the window and would be blocked, but it is exempt ({}, reason: {}): nothing was blocked or scanned.",
        e.pattern, e.reason
    )
}

/// Why a command was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Kind other than `SUPPORT_UNBLOCK`.
    UnknownKind,
    /// The actor's role may not do this.
    RoleNotAllowed(ActorRole),
    /// A timed block is in force: nothing can end it early.
    TimedBlock(Millis),
    /// The mailbox is not blocked.
    NotBlocked,
    /// The pattern is not one.
    BadPattern(PatternError),
    /// `EXEMPTION_PUT` without a reason.
    NoReason,
    /// `EXEMPTION_PUT` expiring at or before processor time.
    ExpiresInPast(Millis),
    /// The tenant is at `limits.max_exemptions_per_tenant`.
    ExemptionLimit,
    /// `EXEMPTION_DELETE` of a pattern without an exemption of the tenant.
    NotExempt,
}

impl RejectReason {
    /// The reason as the code `EventLogEntry.reason` carries.
    pub fn code(self) -> RejectCode {
        match self {
            RejectReason::UnknownKind => RejectCode::UnknownKind,
            RejectReason::RoleNotAllowed(_) => RejectCode::RoleNotAllowed,
            RejectReason::TimedBlock(_) => RejectCode::TimedBlock,
            RejectReason::NotBlocked => RejectCode::NotBlocked,
            RejectReason::BadPattern(_)
            | RejectReason::NoReason
            | RejectReason::ExpiresInPast(_) => RejectCode::InvalidExemption,
            RejectReason::ExemptionLimit => RejectCode::ExemptionLimit,
            RejectReason::NotExempt => RejectCode::NotExempt,
        }
    }
}

/// Detail of `COMMAND_REJECTED`.
pub fn rejected_detail(cmd: &Command, reason: RejectReason) -> String {
    let why = match reason {
        RejectReason::UnknownKind => format!("unknown command kind {}", cmd.kind.as_str()),
        RejectReason::RoleNotAllowed(r) => {
            format!("role {} may not {}", r.as_str(), cmd.kind.as_str())
        }
        RejectReason::TimedBlock(u) => format!(
            "a timed block cannot be ended early (it ends by itself at {})",
            iso8601(u)
        ),
        RejectReason::NotBlocked => "mailbox is not permanently blocked".to_owned(),
        RejectReason::BadPattern(e) => {
            format!("`{}` is not an exemption pattern: {e}", cmd.mailbox)
        }
        RejectReason::NoReason => "an exemption needs a reason".to_owned(),
        RejectReason::ExpiresInPast(x) => {
            format!(
                "the exemption would expire at {}, not in the future",
                iso8601(x)
            )
        }
        RejectReason::ExemptionLimit => format!(
            "the tenant holds the most exemptions allowed (limits.max_exemptions_per_tenant), \
             or {} tenants hold one of {} already",
            super::state::MAX_EXEMPTIONS_PER_KEY,
            cmd.mailbox
        ),
        RejectReason::NotExempt => format!("the tenant holds no exemption of {}", cmd.mailbox),
    };
    format!(
        "{} by {} (role {}), ticket {} rejected: {why} (command {})",
        cmd.kind.as_str(),
        cmd.actor,
        cmd.actor_role.as_str(),
        cmd.ticket,
        cmd.command_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59.999Z");
        // Extremes do not panic.
        let _ = iso8601(i64::MIN);
        let _ = iso8601(i64::MAX);
    }

    #[test]
    fn lengths() {
        assert_eq!(length_text(4 * 3_600_000), "4 h");
        assert_eq!(length_text(90 * 60_000), "90 min");
        assert_eq!(length_text(30_000), "30 s");
        assert_eq!(length_text(1_500), "1500 ms");
        assert_eq!(length_text(0), "0 ms");
    }
}

/// Detail of `SCAN_COMPLETED`.
pub fn scan_completed_detail(device: &str, status: ScanStatus, threats: usize) -> String {
    format!("device {device}: {}, {threats} threats", status.as_str())
}

/// The status and threat count a `SCAN_COMPLETED` detail of `device` says (the API's view
/// reads them back; the device id is known from the event id, so the parse is unambiguous).
pub fn scan_completed_parts(detail: &str, device: &str) -> Option<(ScanStatus, usize)> {
    let rest = detail.strip_prefix("device ")?.strip_prefix(device)?;
    let (status, threats) = rest.strip_prefix(": ")?.split_once(", ")?;
    let n = threats.strip_suffix(" threats")?.parse().ok()?;
    Some((ScanStatus::parse(status)?, n))
}

/// Detail of `SCAN_OVERDUE`.
pub fn scan_overdue_detail(pending: usize, devices: u32, by: Millis) -> String {
    format!(
        "{pending} of {devices} devices did not report a scan result by {}",
        iso8601(by)
    )
}

/// Detail of `INCIDENT_REMEDIATED` / `INCIDENT_NEEDS_ATTENTION`, and the words of its alert.
pub fn incident_detail(
    remediated: bool,
    devices: u32,
    clean: u32,
    attention: u32,
    threats: u32,
) -> String {
    let silent = devices.saturating_sub(clean).saturating_sub(attention);
    let what = if remediated {
        "remediated"
    } else {
        "needs attention"
    };
    format!(
        "{what}: {clean} of {devices} devices clean or cleaned, {attention} with threats remaining \
         or a failed scan, {silent} not reported; {threats} threats found"
    )
}

#[cfg(test)]
#[test]
fn a_scan_completed_detail_reads_back() {
    for (device, status, n) in [
        ("d1", ScanStatus::Clean, 0),
        ("ノートPC, 3: x", ScanStatus::ThreatsRemaining, 12),
    ] {
        let detail = scan_completed_detail(device, status, n);
        assert_eq!(scan_completed_parts(&detail, device), Some((status, n)));
        assert_eq!(scan_completed_parts(&detail, "d"), None);
    }
}

/// `summary` of an `INCIDENT_UPDATE` alert.
pub fn incident_summary(mailbox: &str, detail: &str) -> String {
    format!("Incident of {mailbox} {detail}. The block is unchanged.")
}
