//! What the handlers ask of the view.

use super::{Incident, ViewData};
use crate::policy::{domain_pattern, BlockState, Exemption, MailboxState, Millis};

/// Incidents of a mailbox in `tenant`, newest first. A mailbox can change tenants (a directory
/// move): another tenant's incidents are never shown.
pub fn recent_incidents<'a>(
    v: &'a ViewData,
    mailbox: &str,
    tenant: &str,
) -> Vec<(&'a str, &'a Incident)> {
    let mut out: Vec<(&str, &Incident)> = v
        .recent
        .get(mailbox)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| v.incidents.get(id).map(|i| (id.as_str(), i)))
                .filter(|(_, i)| i.tenant_id == tenant)
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| b.1.when().cmp(&a.1.when()).then_with(|| a.0.cmp(b.0)));
    out
}

/// A page of a tenant's blocked mailboxes after `cursor`, with their state at `now`.
pub fn blocked_page<'a>(
    v: &'a ViewData,
    tenant: &str,
    filter: Option<BlockState>,
    cursor: Option<&str>,
    limit: usize,
    now: Millis,
) -> (Vec<(&'a str, &'a MailboxState, BlockState)>, Option<String>) {
    let Some(set) = v.blocked.get(tenant) else {
        return (Vec::new(), None);
    };
    let range = match cursor {
        Some(c) => set.range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
        None => set.range::<str, _>(..),
    };
    let mut out = Vec::new();
    for mb in range {
        let Some(s) = v.mailboxes.get(mb) else {
            continue;
        };
        let state = s.block_state_at(now);
        if state == BlockState::Unblocked || filter.is_some_and(|f| f != state) {
            continue;
        }
        if out.len() == limit {
            let next = out
                .last()
                .map(|(m, _, _): &(&str, &MailboxState, BlockState)| m.to_string());
            return (out, next);
        }
        out.push((mb.as_str(), s, state));
    }
    (out, None)
}

/// The tenant's exemptions in force at `now`, by pattern.
pub fn exemptions_of<'a>(v: &'a ViewData, tenant: &str, now: Millis) -> Vec<&'a Exemption> {
    v.exempt
        .get(tenant)
        .into_iter()
        .flat_map(|keys| keys.iter())
        .filter_map(|k| v.mailboxes.get(k)?.exemption_of(tenant))
        .filter(|e| e.in_force(tenant, now))
        .collect()
}

/// The exemption in force at `now` that a trip of `mailbox` in `tenant` would meet: its own, else
/// its domain's (as the pipeline matches, SPEC §1.11 and §4).
pub fn exemption_for<'a>(
    v: &'a ViewData,
    tenant: &str,
    mailbox: &str,
    now: Millis,
) -> Option<&'a Exemption> {
    let of = |key: &str| {
        v.mailboxes
            .get(key)?
            .exemption_of(tenant)
            .filter(|e| e.in_force(tenant, now))
    };
    of(mailbox).or_else(|| of(&domain_pattern(mailbox)?))
}
