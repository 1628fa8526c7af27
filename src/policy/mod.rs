//! The policy core: SPEC §1 and §4 as a pure, deterministic per-mailbox state machine.
//!
//! No I/O, no clock, no async: [`step`] takes a mailbox's [`MailboxState`], one [`Input`]
//! (verdict, admin command, scan result or timer tick), the processor time `now`, a read-only [`Directory`]
//! and the global [`Policy`], mutates the state and returns a [`StepResult`]: the records to
//! publish in order ([`Effect`]), what happened ([`Outcome`], for metrics), whether `sent_at` was
//! clamped and whether the state changed (must be persisted). The pipeline calls it per record in
//! partition order and commits effects, state and offsets in one transaction.
//!
//! Modules: [`model`] (domain types, the contract with codec and pipeline), [`config`]
//! ([`Policy`], validation, tenant overrides), [`window`] (exact sliding window, de-duplication,
//! lateness), [`ladder`] (strike durations, permanent strike, decay), [`commands`] (support
//! unblock / rejections), [`incidents`] (scan results and the end of incidents), [`shadow`] (the
//! shadow policy), [`ids`] (deterministic UUID v5 ids), [`state`] ([`MailboxState`] and its
//! compact versioned encoding), [`text`] (wording of event details and alert summaries),
//! [`records`] (the block and event records, built in one place), [`engine`] ([`step`], one
//! function per rule below).
//!
//! # Rules, in the order `step` applies them
//!
//! 1. **Lazy expiry.** Any input first ends a timed block if `now >= blocked_until` (exactly at
//!    `blocked_until` it ends; 1 ms before it does not): effects `Block(UNBLOCKED)` (same
//!    incident, strike unchanged, `blocked_at`/`blocked_until` and evidence of the ended block,
//!    `updated_at = now`) and `Event(MAILBOX_UNBLOCKED)`; outcome `Unblocked`. A `Tick` does only
//!    this; with nothing due it is `Idle` with no effect and no state change.
//!    - **Rule 1b, exemption expiry.** Any input (and its key's tick) also ends each exemption
//!      of the key with `now >= expires_at`: `Exemption` tombstone and `Event(EXEMPTION_EXPIRED)`
//!      (ids from the granting command) → `ExemptionExpired`.
//!    - **Rule 1c, scan deadline.** Any input (and its key's tick) also ends each open incident
//!      with `now >= deadline` (`scan.result_timeout_ms` after its trip) as overdue:
//!      `Event(SCAN_OVERDUE)`, then the end of rule 11 (needs attention) → `IncidentClosed`.
//! 2. **CLEAN** (any non-offending verdict): `NotOffending`, nothing else (no lookup, no state
//!    change).
//! 3. **Clamp.** `sent_at > now + max_future_skew_ms` → `sent_at := now`, `clamped = true`.
//! 4. **Idle TTL.** A state with no strikes and no block whose last change (`touched_at`) is more
//!    than `state_idle_ttl_ms` before `now` is reset to the initial state (window, support-unblock
//!    floor). This makes [`MailboxState::is_forgettable`] exact: dropping a forgettable state never
//!    changes behaviour. (Choice: the reset covers the whole state, not only the window, and is
//!    applied before the floor check; the only visible difference is that a verdict sent before a
//!    support unblock and delivered more than the TTL later counts.)
//! 5. **Blocked.** While a permanent block is in force, or if `sent_at < counting_floor`, the
//!    verdict is `IgnoredWhileBlocked`. The counting floor is `blocked_until` of the latest timed
//!    block (set when it starts, so a verdict sent before `blocked_until` never counts, even when
//!    it arrives after the expiry) or the processor time of a support unblock.
//! 6. **Late.** With `W` the newest `sent_at` in the window (none if empty): `sent_at < W −
//!    allowed_lateness_ms` → `Late` (dropped, not counted).
//! 7. **Duplicate.** `message_id` already in the window → `Duplicate`.
//! 8. **Count.** The tenant's policy is resolved (`dir.tenant`, then
//!    [`Policy::with_overrides`]); the entry is inserted in `sent_at` order (ties in arrival
//!    order). It trips iff some `threshold` entries including the new one span at most
//!    `window_ms` (inclusive). The earliest such run (lowest start in `sent_at` order) is the
//!    evidence; `blocked_at` is its largest `sent_at`. Without a trip the window is pruned of
//!    entries older than `W' − lateness − window` (they can never trip again) → `Counted`.
//!    Under `ENFORCE` a counted verdict first drops the would-be ladder (rule 9a).
//!    - **Rule 8a, early warning.** Without a trip, if some `warn_at()` entries including the new
//!      one, all sent after `warned_through`, span at most `window_ms`: `Alert` (WARNING), `Event`s
//!      MAILBOX_WARNED and ALERT_SENT, ids from the run's largest `sent_at`, which becomes
//!      `warned_through` → `Counted`, `Warned`. A trip, a support unblock and the idle reset clear
//!      `warned_through`.
//! 9. **Trip.** With decay (`strike_decay_ms = Some(d)`) the strike count first drops by
//!    `⌊(blocked_at − end of last block) / d⌋` (never below 0); then `strike = strikes + 1`.
//!    `strike >= permanent_strike` → permanent, else `blocked_until = max(blocked_at, now) + base
//!    × 2^(strike−1)` (a block never lasts less than its length, whatever the lag). The window
//!    is emptied; for a timed block the counting floor (and the "end of last block" for decay)
//!    becomes `blocked_until`. Effects, in order: `Block` (BLOCKED /
//!    PERMANENTLY_BLOCKED, `updated_at = now`), one `Scan` per device (`requested_at = now`),
//!    `Alert`, `Event` MAILBOX_BLOCKED / MAILBOX_PERMANENTLY_BLOCKED, then one `Event`
//!    SCAN_REQUESTED per device (detail = device id) or one SCAN_SKIPPED (detail = reason), then
//!    `Event` ALERT_SENT. Scan rule, first match: Synchronized Security off →
//!    `SYNC_SECURITY_OFF`; no endpoint licence → `NO_ENDPOINT_LICENCE`; owner unknown →
//!    `OWNER_UNKNOWN`; no or empty device list → `NO_DEVICES`; else one request per distinct
//!    device id, in directory order. The owner is looked up on every trip (the alert carries it);
//!    devices only when a scan is possible.
//!    - **Rule 9a, alert-only tenants** (`TenantSettings.mode = ALERT_ONLY`). Rule 5 also ignores a
//!      verdict sent before the end of the would-be block (or any, if it is permanent). A trip
//!      advances the would-be ladder ([`Simulated`]: strikes and end, decay from that end) exactly
//!      as rule 9 would the real one, and touches nothing else: no block, floor, strike or scan.
//!      Effects: `Alert` (SIMULATED_BLOCK, the would-be strike, state and `blocked_until`),
//!      `Event`s TRIP_SIMULATED and ALERT_SENT, ids from the simulated incident id →
//!      `SimulatedTrip`.
//!    - **Rule 9b, exemptions** ([`exemptions`]). Before rules 9 and 9a: if the verdict's tenant
//!      holds an exemption in force at `now` (`expires_at > now`) of the mailbox itself (this
//!      key's state) or of its domain (`*@domain`, [`Directory::exemption`]), the trip blocks,
//!      scans and strikes nothing and sets no floor (the window is emptied as by any trip):
//!      `Alert` (EXEMPT_TRIP), `Event`s TRIP_EXEMPTED and ALERT_SENT, ids from
//!      [`ids::exempt_trip_id`] → `ExemptTrip`. A block in force is untouched (rule 5 keeps it).
//!    - **Rule 9c, incidents** ([`incidents`]). A trip of rule 9 that requested scans opens its
//!      incident in the state (one pending request id per device, due at `now +
//!      scan.result_timeout_ms`); at [`state::MAX_OPEN_INCIDENTS`] the oldest is first ended as
//!      overdue (rule 1c's effects).
//! 10. **Commands.** `SUPPORT_UNBLOCK` with role `SUPPORT` on a *permanent* block:
//!     `Block(UNBLOCKED, strike 0)` + `Event(SUPPORT_UNBLOCK)` (actor, role, ticket, command id
//!     in detail); strikes := 0, window emptied, counting floor := `now` → `SupportUnblocked`.
//!     Anything else → only `Event(COMMAND_REJECTED)` with the reason, checked in this order:
//!     unknown kind, role other than SUPPORT, mailbox not blocked, timed block (never ended
//!     early). No state change → `CommandRejected`. A redelivered command is harmless: once the
//!     block is lifted it is rejected, and its event ids derive from the command id.
//!     - **Rule 10b.** `EXEMPTION_PUT` / `EXEMPTION_DELETE` (the key is the pattern) from ADMIN or
//!       SUPPORT add or replace / remove the tenant's exemption in this key's state: `Exemption`
//!       upsert or tombstone, `Event(EXEMPTION_ADDED / EXEMPTION_REMOVED)`. Rejections, in order:
//!       role, pattern, (PUT) blank reason, expiry not after `now`, the tenant's bound
//!       ([`Directory::exemptions_full`]) or [`state::MAX_EXEMPTIONS_PER_KEY`] for a new one;
//!       (DELETE) none held.
//!
//! 11. **Scan results** (`Input::ScanResult`, routed to the incident's mailbox; rules 1, 1b and 1c
//!     first). It counts only for an open incident of this mailbox with the result's
//!     `incident_id`, under that incident's tenant, whose request id is `ids::request_id(incident,
//!     device_id)` and still pending: `Event(SCAN_COMPLETED)` (discriminator the device) →
//!     `ScanCompleted`. Otherwise nothing → `ScanResultIgnored` (other tenant, duplicate — the
//!     device already reported — or unknown request). The last device's result ends the incident:
//!     `Alert(INCIDENT_UPDATE)`, `Event(INCIDENT_REMEDIATED)` when every device reported `CLEAN` or
//!     `THREATS_REMOVED`, else `Event(INCIDENT_NEEDS_ATTENTION)`, then `Event(ALERT_SENT)`
//!     (discriminator `INCIDENT_UPDATE`) → `IncidentClosed`. The block is never touched.
//!
//! 12. **Shadow policy** ([`shadow`], when [`Policy::shadow`] is set). After rules 3 to 9, the
//!     same offending verdict (same clamped `sent_at`) is counted by the shadow policy (with the
//!     tenant's `TenantSettings.shadow` overrides) in its own [`ShadowState`]: its idle reset,
//!     its would-be block (`sent_at` before its end, or any after a permanent one: not counted),
//!     lateness, duplicate and the window as rules 4 to 8, its ladder as rule 9 (decay from the
//!     end of its last would-be block). A trip writes only `Event(SHADOW_TRIP)` with its
//!     [`TripFacts`] (ids from [`ids::shadow_incident_id`]) → `ShadowTrip`; an exemption in force
//!     makes it exempt (`exempt`, no strike), the tenant's mode does not matter, nothing live
//!     changes. Without a shadow configured, an offending verdict drops the state's shadow part.
//!
//! # Choices beyond the SPEC
//!
//! - Records about a block use the tenant stored in the state (tenant of the last counted
//!   verdict), so tick-driven unblocks have one; trips and rejections use the input's tenant.
//! - A verdict sent at or after `blocked_until` but processed while that timed block is still in
//!   force (only possible within `max_future_skew_ms`) counts. If such verdicts trip before the
//!   old block expired, the new block simply replaces it (no UNBLOCKED in between: the mailbox is
//!   never unblocked, and the new block starts at `blocked_at >= blocked_until` in event time).
//! - Tenant overrides that would make the policy invalid are ignored field by field.
//! - The de-duplication memory is the window: ids are remembered while their `sent_at` lies
//!   within `allowed_lateness_ms + window_ms` of the newest counted one. A redelivery older than
//!   that is `Late` (its `sent_at` is below the lateness bound), so it never counts twice. Two
//!   bounded-memory exceptions: a redelivery whose far-future `sent_at` is clamped again, to a
//!   later clock, after the first copy left the window (> 15 min later by default); and a
//!   redelivery arriving after the idle TTL (24 h without change) reset the state. Either counts
//!   once more; neither can happen for an input redelivered by Kafka itself, since state and
//!   offsets commit together.
//! - Changing a tenant's window override mid-stream applies from the next verdict; entries
//!   already pruned under a smaller window are not recovered.
//! - Event `at` and record `updated_at` / `requested_at` are the processor time `now`.
//! - Every event that records a trip (`MAILBOX_BLOCKED`, `MAILBOX_PERMANENTLY_BLOCKED`,
//!   `TRIP_SIMULATED`, `TRIP_EXEMPTED`, `SHADOW_TRIP`) carries it as data
//!   ([`EventLogEntry::trip`]); for an exempt trip, the strike and block it would have applied.
//!
//! # Ids
//!
//! See [`ids`]: incident = f(mailbox, strike, blocked_at); request = f(incident, device);
//! alert = f(incident); event = f(mailbox, incident or command id, kind, discriminator).

pub mod commands;
pub mod config;
pub mod engine;
pub mod exemptions;
pub mod ids;
pub mod incidents;
pub mod ladder;
pub mod limits;
pub mod mailbox;
pub mod model;
pub mod records;
pub mod shadow;
pub mod state;
pub mod text;
pub mod window;

pub use config::{Policy, PolicyError};
pub use engine::step;
pub use limits::{LimitError, Limits};
pub use mailbox::{KeyError as MailboxKeyError, Mailbox, MailboxKey};
pub use model::*;
pub use state::{
    CurrentBlock, MailboxState, OpenIncident, ShadowState, Simulated, StateDecodeError,
};

#[cfg(test)]
mod tests;
