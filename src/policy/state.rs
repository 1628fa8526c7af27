//! Per-mailbox state and its compact, versioned binary encoding (the changelog / RocksDB value).
//!
//! Encoding, version 1 (all integers LEB128 varints; signed ones zig-zag encoded; strings are a
//! varint byte length then UTF-8):
//!
//! ```text
//! u8      version = 1
//! varint  flags: 1 = block present, 2 = block permanent, 4 = counting floor, 8 = last block end,
//!         16 = warned through, 32 = simulated ladder, 64 = simulated block permanent,
//!         128 = exemptions, 256 = open incidents, 512 = shadow
//! varint  strikes
//! zigzag  touched_at
//! string  tenant_id
//! zigzag  counting_floor            (flag 4)
//! zigzag  last_block_end            (flag 8)
//! zigzag  warned_through            (flag 16)
//! sim     (flag 32): varint strikes, zigzag until (unless flag 64)
//! exempt  (flag 128): varint n (>= 1), then per exemption: string tenant, string pattern,
//!         string reason, string actor, u8 role (0 SUPPORT, 1 ADMIN, 2 VIEWER), string command
//!         id, zigzag created_at, u8 0 (never expires) or 1 then zigzag expires_at
//! inc     (flag 256): varint n (>= 1), then per open incident: 16 bytes incident uuid, string
//!         tenant, varint strike, zigzag opened_at, zigzag deadline, varint devices, varint
//!         remediated, varint attention, varint threats, varint p, p × 16 bytes pending request
//!         uuid, varint q, q × 16 bytes reported request uuid
//! shadow  (flag 512): varint strikes, zigzag touched_at, u8 0 (no would-be block), 1 then
//!         zigzag until (a timed one's end) or 2 (permanent), then its window entries as below
//! block   (flag 1): varint strike, zigzag blocked_at, zigzag blocked_until (unless flag 2),
//!         16 bytes incident uuid, varint n, n × string evidence message id
//! varint  n window entries, then per entry: sent_at (first: zigzag; then varint delta to the
//!         previous one, entries being sorted), string message id
//! ```
//!
//! Flags 16 to 128 came with issue 21 (early warning, alert-only tenants, exemptions), flag 256
//! with issue 22 (incidents waiting for scan results), flag 512 with issue 23 (the shadow
//! policy); a state written before has none of them and decodes as it always did.
//!
//! A typical idle mailbox with a couple of counted messages is ~60–100 bytes; a blocked one adds
//! ~16 bytes + its evidence ids. Decoding never panics and never allocates more than the input
//! could describe: every length is checked against the bytes left.

use super::config::Policy;
use super::model::{ActorRole, BlockState, Exemption, Millis};
use super::window::{Entry, Window};
use uuid::Uuid;

/// Most tenants that may hold an exemption of one pattern (a shared domain such as a
/// freemail provider's): a bound on one state's size.
pub const MAX_EXEMPTIONS_PER_KEY: usize = 64;

/// Most incidents of one mailbox that wait for scan results at once: a trip while this many are
/// open first closes the oldest as overdue (a bound on one state's size: each holds up to
/// `limits.max_devices` pending request ids of 16 bytes).
pub const MAX_OPEN_INCIDENTS: usize = 3;

/// Current encoding version (leading byte).
pub const STATE_VERSION: u8 = 1;

/// Why bytes could not be decoded into a [`MailboxState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDecodeError {
    /// No bytes at all.
    #[error("empty state value")]
    Empty,
    /// Leading byte is not a known version.
    #[error("unknown state encoding version {0}")]
    UnknownVersion(u8),
    /// The value ended in the middle of a field.
    #[error("state value truncated")]
    Truncated,
    /// A varint longer than 10 bytes or above its type's range.
    #[error("malformed varint in state value")]
    BadVarint,
    /// A string is not UTF-8.
    #[error("invalid UTF-8 in state value")]
    BadUtf8,
    /// Bytes decode but describe an impossible state.
    #[error("invalid state value: {0}")]
    Invalid(&'static str),
    /// Bytes left after the last field.
    #[error("{0} trailing bytes after state value")]
    TrailingBytes(usize),
}

/// The block currently in force (timed blocks stay here until expired by a tick or lazily).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentBlock {
    /// Strike of this block.
    pub strike: u32,
    /// Largest `sent_at` of the evidence.
    pub blocked_at: Millis,
    /// End of a timed block; `None` when permanent.
    pub blocked_until: Option<Millis>,
    /// Incident id.
    pub incident_id: Uuid,
    /// Message ids that tripped it.
    pub evidence_message_ids: Vec<String>,
}

impl CurrentBlock {
    /// Whether the block is permanent.
    pub fn is_permanent(&self) -> bool {
        self.blocked_until.is_none()
    }

    /// `BLOCKED` or `PERMANENTLY_BLOCKED`.
    pub fn state(&self) -> BlockState {
        if self.is_permanent() {
            BlockState::PermanentlyBlocked
        } else {
            BlockState::Blocked
        }
    }
}

/// The would-be ladder of an `ALERT_ONLY` tenant's mailbox: what enforcement would have done.
/// Never blocks anything; see [`crate::policy`] rule 9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulated {
    /// Would-be strike count (>= 1).
    pub strikes: u32,
    /// End of the would-be block (verdicts sent before it are not counted in simulation, as they
    /// would not be under enforcement); `None` = the would-be block is permanent.
    pub until: Option<Millis>,
}

/// An incident whose scans were requested and that has not ended yet (rule 11 of
/// [`crate::policy`]): `OPEN` until every device reported or `deadline` passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIncident {
    /// Incident id.
    pub incident_id: Uuid,
    /// Tenant of the trip; a result of another tenant changes nothing.
    pub tenant_id: String,
    /// Strike of the trip.
    pub strike: u32,
    /// Processor time of the trip (when the scans were requested).
    pub opened_at: Millis,
    /// Processor time by which every device must have reported (`opened_at +
    /// scan.result_timeout_ms`).
    pub deadline: Millis,
    /// Devices a scan was requested for.
    pub devices: u32,
    /// Devices that reported `CLEAN` or `THREATS_REMOVED`.
    pub remediated: u32,
    /// Devices that reported `THREATS_REMAINING`, `FAILED` or `UNKNOWN`.
    pub attention: u32,
    /// Threats reported, over all devices.
    pub threats: u32,
    /// Request ids of the devices that have not reported (16 bytes each, whatever the device
    /// id's length).
    pub pending: Vec<Uuid>,
    /// Request ids of the devices that have reported (a repeat is a duplicate, not unknown).
    pub reported: Vec<Uuid>,
}

/// The shadow policy's own state of one mailbox (rule 12 of [`crate::policy`]): its window and
/// would-be ladder, never shared with the live ones. `Default` is a shadow that saw nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowState {
    /// Counted offending messages, as the live window but under the shadow's numbers.
    pub(crate) window: Window,
    /// Would-be strikes (after decay at the last trip).
    pub(crate) strikes: u32,
    /// End of the last would-be timed block: verdicts sent before it do not count, and decay
    /// runs from it.
    pub(crate) until: Option<Millis>,
    /// The would-be block is permanent: nothing counts any more.
    pub(crate) permanent: bool,
    /// Processor time of the shadow's last change (its own idle TTL).
    pub(crate) touched_at: Millis,
}

impl ShadowState {
    /// Would-be strikes.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    /// End of the last would-be timed block.
    pub fn until(&self) -> Option<Millis> {
        self.until
    }

    /// Whether the would-be block is permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The shadow's window.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// No strikes and untouched for longer than `ttl`: as good as new.
    pub(crate) fn is_idle_expired(&self, now: Millis, ttl: Millis) -> bool {
        self.strikes == 0 && now.saturating_sub(self.touched_at) > ttl
    }

    /// Whether dropping it changes nothing: no strikes, and an empty or idle window.
    fn is_forgettable(&self, now: Millis, ttl: Millis) -> bool {
        self.strikes == 0 && (self.window.is_empty() || self.is_idle_expired(now, ttl))
    }
}

/// Everything the core remembers about one mailbox. `Default` is the initial state (equivalent to
/// a forgotten one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub(crate) window: Window,
    pub(crate) strikes: u32,
    pub(crate) block: Option<CurrentBlock>,
    /// Verdicts sent before this never count: `blocked_until` of the latest timed block, or the
    /// processor time of a support unblock.
    pub(crate) counting_floor: Option<Millis>,
    /// End of the last block (`blocked_until`, or the support unblock time), for strike decay.
    pub(crate) last_block_end: Option<Millis>,
    /// Processor time of the last state change.
    pub(crate) touched_at: Millis,
    /// Tenant of the mailbox, as of the last counted verdict (empty = never seen).
    pub(crate) tenant_id: String,
    /// Largest `sent_at` of the run that raised the last early warning: a new warning needs a
    /// run of entries all sent after it (once per window).
    pub(crate) warned_through: Option<Millis>,
    /// The would-be ladder while the tenant is `ALERT_ONLY` (cleared by a verdict counted under
    /// `ENFORCE`).
    pub(crate) sim: Option<Simulated>,
    /// The exemptions granted for this key's pattern (an exact mailbox's, or a `*@domain` key's
    /// own state), at most one per tenant and [`MAX_EXEMPTIONS_PER_KEY`] in all, until removed
    /// or expired.
    pub(crate) exemptions: Vec<Exemption>,
    /// Incidents waiting for scan results, oldest first, at most [`MAX_OPEN_INCIDENTS`].
    pub(crate) incidents: Vec<OpenIncident>,
    /// The shadow policy's state, while a shadow is configured (boxed: most states have none).
    pub(crate) shadow: Option<Box<ShadowState>>,
}

impl MailboxState {
    /// Strike count (trips so far, after any decay applied at the last trip; 0 after a support
    /// unblock).
    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    /// The block in force as of the last processed input, if any. A timed block whose
    /// `blocked_until` has passed stays here until the next tick or input expires it.
    pub fn block(&self) -> Option<&CurrentBlock> {
        self.block.as_ref()
    }

    /// Block state as of the last processed input.
    pub fn block_state(&self) -> BlockState {
        self.block
            .as_ref()
            .map_or(BlockState::Unblocked, CurrentBlock::state)
    }

    /// Block state at `now` (a timed block whose end has passed counts as ended).
    pub fn block_state_at(&self, now: Millis) -> BlockState {
        match &self.block {
            Some(b) if b.blocked_until.is_some_and(|u| now >= u) => BlockState::Unblocked,
            Some(b) => b.state(),
            None => BlockState::Unblocked,
        }
    }

    /// `blocked_at` of the block in force.
    pub fn blocked_at(&self) -> Option<Millis> {
        self.block.as_ref().map(|b| b.blocked_at)
    }

    /// `blocked_until` of a timed block in force (`None` when permanent or not blocked).
    pub fn blocked_until(&self) -> Option<Millis> {
        self.block.as_ref().and_then(|b| b.blocked_until)
    }

    /// Incident id of the block in force.
    pub fn incident_id(&self) -> Option<String> {
        self.block.as_ref().map(|b| b.incident_id.to_string())
    }

    /// Tenant of the mailbox as last seen (`None` if no verdict was ever counted).
    pub fn tenant_id(&self) -> Option<&str> {
        (!self.tenant_id.is_empty()).then_some(self.tenant_id.as_str())
    }

    /// The counting window (counted offending messages not yet pruned).
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Verdicts sent before this never count.
    pub fn counting_floor(&self) -> Option<Millis> {
        self.counting_floor
    }

    /// Processor time of the last state change.
    pub fn touched_at(&self) -> Millis {
        self.touched_at
    }

    /// Largest `sent_at` of the run that raised the last early warning, if any.
    pub fn warned_through(&self) -> Option<Millis> {
        self.warned_through
    }

    /// The would-be ladder of an `ALERT_ONLY` tenant's mailbox, if it tripped.
    pub fn simulated(&self) -> Option<&Simulated> {
        self.sim.as_ref()
    }

    /// The exemptions held under this key (expired or not: see [`Exemption::in_force`]).
    pub fn exemptions(&self) -> &[Exemption] {
        &self.exemptions
    }

    /// The exemption `tenant_id` holds under this key, if any.
    pub fn exemption_of(&self, tenant_id: &str) -> Option<&Exemption> {
        self.exemptions.iter().find(|e| e.tenant_id == tenant_id)
    }

    /// The incidents waiting for scan results, oldest first.
    pub fn open_incidents(&self) -> &[OpenIncident] {
        &self.incidents
    }

    /// The shadow policy's state, if a shadow counted anything.
    pub fn shadow(&self) -> Option<&ShadowState> {
        self.shadow.as_deref()
    }

    /// When a timer must fire for this mailbox: the earliest of `blocked_until` of a timed block
    /// in force, the expiries of its exemptions and the result deadlines of its open incidents.
    pub fn next_deadline(&self) -> Option<Millis> {
        let expiry = self.exemptions.iter().filter_map(|e| e.expires_at);
        let results = self.incidents.iter().map(|i| i.deadline);
        self.blocked_until()
            .into_iter()
            .chain(expiry)
            .chain(results)
            .min()
    }

    /// Whether the state may be dropped (deleted from the store) at `now` without changing any
    /// future behaviour: no strikes and no block, and either nothing else is remembered (empty
    /// window, no support-unblock floor) or the state has been idle for longer than
    /// `policy.state_idle_ttl_ms` (the next offending verdict would reset it anyway). States
    /// with strikes are kept (they are the ~1 % of compromised mailboxes, and the ladder never
    /// forgets without decay). The shadow's part is held to the same rule under the same TTL.
    pub fn is_forgettable(&self, now: Millis, policy: &Policy) -> bool {
        self.shadow
            .as_deref()
            .is_none_or(|s| s.is_forgettable(now, policy.state_idle_ttl_ms))
            && self.strikes == 0
            && self.block.is_none()
            && self.sim.is_none()
            && self.exemptions.is_empty()
            && self.incidents.is_empty()
            && ((self.window.is_empty()
                && self.counting_floor.is_none()
                && self.warned_through.is_none())
                || self.is_idle_expired(now, policy))
    }

    /// No strikes, no block, and untouched for longer than the idle TTL.
    pub(crate) fn is_idle_expired(&self, now: Millis, policy: &Policy) -> bool {
        self.strikes == 0
            && self.block.is_none()
            && self.sim.is_none()
            && self.incidents.is_empty()
            && now.saturating_sub(self.touched_at) > policy.state_idle_ttl_ms
    }

    /// Appends the encoding (see the module docs) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(STATE_VERSION);
        let mut flags = 0u64;
        if let Some(b) = &self.block {
            flags |= 1;
            if b.is_permanent() {
                flags |= 2;
            }
        }
        if self.counting_floor.is_some() {
            flags |= 4;
        }
        if self.last_block_end.is_some() {
            flags |= 8;
        }
        if self.warned_through.is_some() {
            flags |= 16;
        }
        if let Some(sim) = &self.sim {
            flags |= 32;
            if sim.until.is_none() {
                flags |= 64;
            }
        }
        if !self.exemptions.is_empty() {
            flags |= 128;
        }
        if !self.incidents.is_empty() {
            flags |= 256;
        }
        if self.shadow.is_some() {
            flags |= 512;
        }
        put_u(out, flags);
        put_u(out, u64::from(self.strikes));
        put_i(out, self.touched_at);
        put_str(out, &self.tenant_id);
        if let Some(f) = self.counting_floor {
            put_i(out, f);
        }
        if let Some(e) = self.last_block_end {
            put_i(out, e);
        }
        if let Some(w) = self.warned_through {
            put_i(out, w);
        }
        if let Some(sim) = &self.sim {
            put_u(out, u64::from(sim.strikes));
            if let Some(u) = sim.until {
                put_i(out, u);
            }
        }
        if !self.exemptions.is_empty() {
            put_exemptions(out, &self.exemptions);
        }
        if !self.incidents.is_empty() {
            put_incidents(out, &self.incidents);
        }
        if let Some(sh) = &self.shadow {
            put_u(out, u64::from(sh.strikes));
            put_i(out, sh.touched_at);
            match (sh.permanent, sh.until) {
                (true, _) => out.push(2),
                (false, Some(u)) => {
                    out.push(1);
                    put_i(out, u);
                }
                (false, None) => out.push(0),
            }
            put_window(out, &sh.window);
        }
        if let Some(b) = &self.block {
            put_u(out, u64::from(b.strike));
            put_i(out, b.blocked_at);
            if let Some(u) = b.blocked_until {
                put_i(out, u);
            }
            out.extend_from_slice(b.incident_id.as_bytes());
            put_u(out, b.evidence_message_ids.len() as u64);
            for id in &b.evidence_message_ids {
                put_str(out, id);
            }
        }
        put_window(out, &self.window);
    }

    /// The encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v);
        v
    }

    /// Decodes an [`encode`](Self::encode)d state. Never panics; garbage gives an error.
    pub fn decode(bytes: &[u8]) -> Result<MailboxState, StateDecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(StateDecodeError::Empty)?;
        if version != STATE_VERSION {
            return Err(StateDecodeError::UnknownVersion(version));
        }
        let mut r = Reader(rest);
        let flags = check_flags(r.u()?)?;
        let strikes = r.u32()?;
        let touched_at = r.i()?;
        let tenant_id = r.string()?;
        let counting_floor = if flags & 4 != 0 { Some(r.i()?) } else { None };
        let last_block_end = if flags & 8 != 0 { Some(r.i()?) } else { None };
        let warned_through = if flags & 16 != 0 { Some(r.i()?) } else { None };
        let sim = if flags & 32 != 0 {
            let strikes = r.u32()?;
            let until = if flags & 64 == 0 { Some(r.i()?) } else { None };
            Some(Simulated { strikes, until })
        } else {
            None
        };
        let exemptions = if flags & 128 != 0 {
            r.exemptions()?
        } else {
            Vec::new()
        };
        let incidents = if flags & 256 != 0 {
            r.incidents()?
        } else {
            Vec::new()
        };
        let shadow = if flags & 512 != 0 {
            Some(Box::new(r.shadow()?))
        } else {
            None
        };
        let block = if flags & 1 != 0 {
            Some(r.block(flags & 2 != 0)?)
        } else {
            None
        };
        let window = r.window()?;
        if !r.0.is_empty() {
            return Err(StateDecodeError::TrailingBytes(r.0.len()));
        }
        Ok(MailboxState {
            window,
            strikes,
            block,
            counting_floor,
            last_block_end,
            touched_at,
            tenant_id,
            warned_through,
            sim,
            exemptions,
            incidents,
            shadow,
        })
    }
}

/// A window's entries: the count, the first time in full, each later one as the step from the
/// one before.
fn put_window(out: &mut Vec<u8>, window: &Window) {
    let entries = window.entries();
    put_u(out, entries.len() as u64);
    let mut prev: Option<Millis> = None;
    for e in entries {
        match prev {
            None => put_i(out, e.sent_at),
            // Sorted, so the difference is >= 0; as u64 it cannot overflow.
            Some(p) => put_u(out, (e.sent_at as i128 - p as i128) as u64),
        }
        prev = Some(e.sent_at);
        put_str(out, &e.message_id);
    }
}

fn put_incidents(out: &mut Vec<u8>, incidents: &[OpenIncident]) {
    put_u(out, incidents.len() as u64);
    for i in incidents {
        out.extend_from_slice(i.incident_id.as_bytes());
        put_str(out, &i.tenant_id);
        put_u(out, u64::from(i.strike));
        put_i(out, i.opened_at);
        put_i(out, i.deadline);
        for n in [i.devices, i.remediated, i.attention, i.threats] {
            put_u(out, u64::from(n));
        }
        for ids in [&i.pending, &i.reported] {
            put_u(out, ids.len() as u64);
            for p in ids {
                out.extend_from_slice(p.as_bytes());
            }
        }
    }
}

fn put_exemptions(out: &mut Vec<u8>, exemptions: &[Exemption]) {
    put_u(out, exemptions.len() as u64);
    for e in exemptions {
        for s in [&e.tenant_id, &e.pattern, &e.reason, &e.actor] {
            put_str(out, s);
        }
        out.push(match e.actor_role {
            ActorRole::Support => 0,
            ActorRole::Admin => 1,
            ActorRole::Viewer => 2,
        });
        put_str(out, &e.command_id);
        put_i(out, e.created_at);
        match e.expires_at {
            Some(x) => {
                out.push(1);
                put_i(out, x);
            }
            None => out.push(0),
        }
    }
}

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The flags of an encoded state (bit 0 block, 1 permanent, 2 counting floor, 3 last block end,
/// 4 warned through, 5 simulated ladder, 6 simulated permanent, 7 exemptions, 8 open
/// incidents, 9 shadow), if they are consistent.
fn check_flags(flags: u64) -> Result<u64, StateDecodeError> {
    if flags & !0x3FF != 0 {
        return Err(StateDecodeError::Invalid("unknown flags"));
    }
    if flags & 2 != 0 && flags & 1 == 0 {
        return Err(StateDecodeError::Invalid("permanent flag without block"));
    }
    if flags & 64 != 0 && flags & 32 == 0 {
        return Err(StateDecodeError::Invalid(
            "simulated permanent flag without simulated ladder",
        ));
    }
    Ok(flags)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// The exemptions of the key (flag 128: at least one).
    fn exemptions(&mut self) -> Result<Vec<Exemption>, StateDecodeError> {
        let n = self.count()?;
        if n == 0 {
            return Err(StateDecodeError::Invalid(
                "exemption flag without exemptions",
            ));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.exemption()?);
        }
        Ok(out)
    }

    fn exemption(&mut self) -> Result<Exemption, StateDecodeError> {
        Ok(Exemption {
            tenant_id: self.string()?,
            pattern: self.string()?,
            reason: self.string()?,
            actor: self.string()?,
            actor_role: match self.bytes(1)?[0] {
                0 => ActorRole::Support,
                1 => ActorRole::Admin,
                2 => ActorRole::Viewer,
                _ => return Err(StateDecodeError::Invalid("unknown exemption role")),
            },
            command_id: self.string()?,
            created_at: self.i()?,
            expires_at: match self.bytes(1)?[0] {
                0 => None,
                1 => Some(self.i()?),
                _ => return Err(StateDecodeError::Invalid("bad exemption expiry tag")),
            },
        })
    }

    /// The open incidents (flag 256: at least one, at most [`MAX_OPEN_INCIDENTS`]).
    fn incidents(&mut self) -> Result<Vec<OpenIncident>, StateDecodeError> {
        let n = self.count()?;
        if n == 0 || n > MAX_OPEN_INCIDENTS {
            return Err(StateDecodeError::Invalid(
                "open incident count out of range",
            ));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let incident_id = Uuid::from_bytes(self.array16()?);
            let tenant_id = self.string()?;
            let strike = self.u32()?;
            let opened_at = self.i()?;
            let deadline = self.i()?;
            let [devices, remediated, attention, threats] =
                [self.u32()?, self.u32()?, self.u32()?, self.u32()?];
            let pending = self.uuids()?;
            let reported = self.uuids()?;
            if pending.is_empty() {
                return Err(StateDecodeError::Invalid(
                    "open incident with no pending device",
                ));
            }
            out.push(OpenIncident {
                incident_id,
                tenant_id,
                strike,
                opened_at,
                deadline,
                devices,
                remediated,
                attention,
                threats,
                pending,
                reported,
            });
        }
        Ok(out)
    }

    /// A count, then that many 16-byte uuids.
    fn uuids(&mut self) -> Result<Vec<Uuid>, StateDecodeError> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Uuid::from_bytes(self.array16()?));
        }
        Ok(out)
    }

    /// The current block: strike, start, end (absent when `permanent`), incident, evidence.
    fn block(&mut self, permanent: bool) -> Result<CurrentBlock, StateDecodeError> {
        let strike = self.u32()?;
        let blocked_at = self.i()?;
        let blocked_until = if permanent { None } else { Some(self.i()?) };
        let incident_id = Uuid::from_bytes(self.array16()?);
        let n = self.count()?;
        let mut evidence_message_ids = Vec::with_capacity(n);
        for _ in 0..n {
            evidence_message_ids.push(self.string()?);
        }
        Ok(CurrentBlock {
            strike,
            blocked_at,
            blocked_until,
            incident_id,
            evidence_message_ids,
        })
    }

    /// The shadow's state (flag 512).
    fn shadow(&mut self) -> Result<ShadowState, StateDecodeError> {
        let strikes = self.u32()?;
        let touched_at = self.i()?;
        let (until, permanent) = match self.bytes(1)?[0] {
            0 => (None, false),
            1 => (Some(self.i()?), false),
            2 => (None, true),
            _ => return Err(StateDecodeError::Invalid("bad shadow block tag")),
        };
        if permanent && strikes == 0 {
            return Err(StateDecodeError::Invalid(
                "permanent shadow block without strike",
            ));
        }
        Ok(ShadowState {
            window: self.window()?,
            strikes,
            until,
            permanent,
            touched_at,
        })
    }

    /// A window, checked to be sorted.
    fn window(&mut self) -> Result<Window, StateDecodeError> {
        let entries = self.window_entries()?;
        Window::from_sorted(entries).ok_or(StateDecodeError::Invalid("window not sorted"))
    }

    /// The window's entries in order: the first time in full, each later one as the step from
    /// the one before.
    fn window_entries(&mut self) -> Result<Vec<Entry>, StateDecodeError> {
        let n = self.count()?;
        let mut entries = Vec::with_capacity(n);
        let mut prev: Option<Millis> = None;
        for _ in 0..n {
            let sent_at = match prev {
                None => self.i()?,
                Some(p) => p
                    .checked_add_unsigned(self.u()?)
                    .ok_or(StateDecodeError::Invalid("window time overflows"))?,
            };
            prev = Some(sent_at);
            let message_id = self.string()?.into_boxed_str();
            entries.push(Entry {
                sent_at,
                message_id,
            });
        }
        Ok(entries)
    }

    fn u(&mut self) -> Result<u64, StateDecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or(StateDecodeError::Truncated)?;
            self.0 = rest;
            if i == 9 && b > 1 {
                return Err(StateDecodeError::BadVarint);
            }
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(StateDecodeError::BadVarint)
    }

    fn u32(&mut self) -> Result<u32, StateDecodeError> {
        u32::try_from(self.u()?).map_err(|_| StateDecodeError::BadVarint)
    }

    fn i(&mut self) -> Result<i64, StateDecodeError> {
        let u = self.u()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// An element count: each element takes at least one byte, so more than the bytes left is
    /// garbage (and would be an allocation bomb).
    fn count(&mut self) -> Result<usize, StateDecodeError> {
        let n = self.u()?;
        if n > self.0.len() as u64 {
            return Err(StateDecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], StateDecodeError> {
        if n > self.0.len() {
            return Err(StateDecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn string(&mut self) -> Result<String, StateDecodeError> {
        let n = self.u()?;
        let n = usize::try_from(n).map_err(|_| StateDecodeError::Truncated)?;
        let b = self.bytes(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| StateDecodeError::BadUtf8)
    }

    fn array16(&mut self) -> Result<[u8; 16], StateDecodeError> {
        let b = self.bytes(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MailboxState {
        let mut window = Window::default();
        window.insert(1_700_000_000_000, "m-1");
        window.insert(1_700_000_000_500, "m-2");
        window.insert(1_699_999_999_000, "m-0");
        MailboxState {
            window,
            strikes: 3,
            block: Some(CurrentBlock {
                strike: 3,
                blocked_at: 1_700_000_000_000,
                blocked_until: Some(1_700_014_400_000),
                incident_id: Uuid::from_u128(42),
                evidence_message_ids: vec!["a".into(), "b".into()],
            }),
            counting_floor: Some(1_700_014_400_000),
            last_block_end: Some(-5),
            touched_at: 1_700_000_000_123,
            tenant_id: "tenant-é".into(),
            warned_through: Some(1_699_999_999_500),
            sim: Some(Simulated {
                strikes: 2,
                until: Some(1_700_007_200_000),
            }),
            exemptions: vec![crate::policy::Exemption {
                tenant_id: "tenant-é".into(),
                pattern: "*@example.com".into(),
                reason: "newsletter".into(),
                actor: "carol".into(),
                actor_role: crate::policy::ActorRole::Admin,
                command_id: "c-1".into(),
                created_at: 1_700_000_000_000,
                expires_at: Some(1_700_086_400_000),
            }],
            incidents: vec![OpenIncident {
                incident_id: Uuid::from_u128(42),
                tenant_id: "tenant-é".into(),
                strike: 3,
                opened_at: 1_700_000_000_100,
                deadline: 1_700_014_400_100,
                devices: 3,
                remediated: 1,
                attention: 0,
                threats: 2,
                pending: vec![Uuid::from_u128(7), Uuid::from_u128(8)],
                reported: vec![Uuid::from_u128(9)],
            }],
            shadow: Some(Box::new(shadow_sample())),
        }
    }

    fn shadow_sample() -> ShadowState {
        let mut window = Window::default();
        window.insert(1_700_000_000_100, "m-1");
        window.insert(1_700_000_000_200, "s-2");
        ShadowState {
            window,
            strikes: 2,
            until: Some(1_700_007_200_000),
            permanent: false,
            touched_at: 1_700_000_000_200,
        }
    }

    /// The shadow's section: timed, permanent and without a block round-trip; a state with only
    /// shadow data is kept while it counts and forgotten by the idle TTL like the live one.
    #[test]
    fn the_shadow_round_trips_and_is_forgotten_like_the_live_state() {
        let p = Policy::default();
        let ttl = p.state_idle_ttl_ms;
        let mut perm = shadow_sample();
        perm.permanent = true;
        perm.until = None;
        let mut fresh = shadow_sample();
        fresh.strikes = 0;
        fresh.until = None;
        for sh in [shadow_sample(), perm, fresh.clone()] {
            let s = MailboxState {
                shadow: Some(Box::new(sh)),
                ..MailboxState::default()
            };
            let bytes = s.to_bytes();
            assert_eq!(bytes[1] & 0x80, 0x80, "flags take two varint bytes");
            assert_eq!(MailboxState::decode(&bytes).unwrap(), s);
        }
        // Only shadow data: a window without strikes is forgotten after the TTL, not before.
        let only = MailboxState {
            shadow: Some(Box::new(fresh.clone())),
            ..MailboxState::default()
        };
        let t = fresh.touched_at;
        assert!(!only.is_forgettable(t + ttl, &p));
        assert!(only.is_forgettable(t + ttl + 1, &p));
        // An empty shadow is nothing to keep; would-be strikes are kept for good.
        let mut empty = only.clone();
        empty.shadow.as_mut().unwrap().window.clear();
        assert!(empty.is_forgettable(t, &p));
        let struck = MailboxState {
            shadow: Some(Box::new(shadow_sample())),
            ..MailboxState::default()
        };
        assert!(!struck.is_forgettable(i64::MAX, &p));
        // A live state that may go is kept for its shadow's window.
        let mut live = only.clone();
        live.touched_at = t;
        assert!(!live.is_forgettable(t + ttl, &p));
        assert_eq!(
            MailboxState::decode(&[1, 0x80, 4, 0, 0, 0, 0, 0, 2, 0]),
            Err(StateDecodeError::Invalid(
                "permanent shadow block without strike"
            ))
        );
        assert_eq!(
            MailboxState::decode(&[1, 0x80, 4, 0, 0, 0, 1, 0, 3, 0]),
            Err(StateDecodeError::Invalid("bad shadow block tag"))
        );
    }

    /// A state with open incidents: the deadline is a timer, the state is never forgotten, and
    /// an empty pending list or too many incidents do not decode.
    #[test]
    fn open_incidents_round_trip_and_are_checked() {
        let mut s = sample();
        s.block = None;
        s.exemptions.clear();
        assert_eq!(s.next_deadline(), Some(1_700_014_400_100));
        assert!(!s.is_forgettable(i64::MAX, &Policy::default()));
        let mut more = s.clone();
        let first = more.incidents[0].clone();
        for k in 1..MAX_OPEN_INCIDENTS {
            more.incidents.push(OpenIncident {
                incident_id: Uuid::from_u128(100 + k as u128),
                deadline: first.deadline - k as i64,
                ..first.clone()
            });
        }
        assert_eq!(MailboxState::decode(&more.to_bytes()).unwrap(), more);
        assert_eq!(
            more.next_deadline(),
            Some(first.deadline - (MAX_OPEN_INCIDENTS as i64 - 1))
        );
        more.incidents.push(first.clone());
        assert_eq!(
            MailboxState::decode(&more.to_bytes()),
            Err(StateDecodeError::Invalid(
                "open incident count out of range"
            ))
        );
        s.incidents[0].pending.clear();
        assert_eq!(
            MailboxState::decode(&s.to_bytes()),
            Err(StateDecodeError::Invalid(
                "open incident with no pending device"
            ))
        );
    }

    #[test]
    fn round_trips() {
        let mut perm = sample();
        perm.block.as_mut().unwrap().blocked_until = None;
        perm.exemptions[0].expires_at = None;
        let first = perm.exemptions[0].clone();
        perm.exemptions.push(crate::policy::Exemption {
            tenant_id: "other".into(),
            ..first
        });
        let mut extreme = MailboxState::default();
        extreme.window.insert(i64::MIN, "lo");
        extreme.window.insert(i64::MAX, "hi");
        extreme.touched_at = i64::MIN;
        extreme.strikes = u32::MAX;
        let mut sim_perm = sample();
        sim_perm.sim.as_mut().unwrap().until = None;
        for s in [MailboxState::default(), sample(), perm, sim_perm, extreme] {
            let bytes = s.to_bytes();
            assert_eq!(bytes[0], STATE_VERSION);
            assert_eq!(MailboxState::decode(&bytes).unwrap(), s);
        }
        assert_eq!(MailboxState::default().to_bytes(), vec![1, 0, 0, 0, 0, 0]);
    }

    /// A state written before issue 21 (no flag above 8) still decodes, to the same state.
    #[test]
    fn states_written_before_warnings_and_simulation_decode() {
        let mut old = sample();
        old.warned_through = None;
        old.sim = None;
        old.exemptions.clear();
        old.incidents.clear();
        old.shadow = None;
        let mut bytes = vec![1u8, 1 | 4 | 8];
        let tail = old.to_bytes();
        assert_eq!(tail[1], 1 | 4 | 8, "the old flags only");
        bytes.extend_from_slice(&tail[2..]);
        assert_eq!(MailboxState::decode(&bytes).unwrap(), old);
        // Pinned bytes of a version-1 state from before (strikes 2, tenant "t", one entry).
        let pinned = [1u8, 4, 2, 2, 1, b't', 20, 1, 10, 1, b'm'];
        let s = MailboxState::decode(&pinned).unwrap();
        assert_eq!(
            (s.strikes(), s.counting_floor(), s.tenant_id()),
            (2, Some(10), Some("t"))
        );
        assert_eq!((s.warned_through(), s.simulated()), (None, None));
        assert_eq!(s.to_bytes(), pinned);
        assert_eq!(
            MailboxState::decode(&[1, 0x80, 1, 0, 0, 0, 0]),
            Err(StateDecodeError::Invalid(
                "exemption flag without exemptions"
            ))
        );
        assert_eq!(
            MailboxState::decode(&[1, 64, 0, 0, 0, 0]),
            Err(StateDecodeError::Invalid(
                "simulated permanent flag without simulated ladder"
            ))
        );
    }

    #[test]
    fn compact() {
        let mut s = MailboxState {
            tenant_id: "t-000001".into(),
            touched_at: 1_700_000_000_000,
            ..MailboxState::default()
        };
        s.window
            .insert(1_700_000_000_000, "0123456789abcdef0123456789abcdef");
        s.window
            .insert(1_700_000_060_000, "0123456789abcdef0123456789abcdee");
        assert!(s.to_bytes().len() < 100, "{}", s.to_bytes().len());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(MailboxState::decode(&[]), Err(StateDecodeError::Empty));
        assert_eq!(
            MailboxState::decode(&[9, 0]),
            Err(StateDecodeError::UnknownVersion(9))
        );
        let good = sample().to_bytes();
        // Every truncation fails.
        for n in 0..good.len() {
            assert!(MailboxState::decode(&good[..n]).is_err(), "prefix {n}");
        }
        // Trailing bytes fail.
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            MailboxState::decode(&long),
            Err(StateDecodeError::TrailingBytes(1))
        );
        // Huge counts / lengths fail without allocating.
        assert!(MailboxState::decode(&[1, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        assert!(MailboxState::decode(&[1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        // Overlong varint.
        assert_eq!(
            MailboxState::decode(&[
                1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0
            ]),
            Err(StateDecodeError::BadVarint)
        );
        // Every single-byte corruption and a pseudo-random corpus: no panic.
        for i in 0..good.len() {
            for b in [0u8, 1, 0x7F, 0x80, 0xFF] {
                let mut g = good.clone();
                g[i] = b;
                let _ = MailboxState::decode(&g);
            }
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2_000usize {
            let mut g = Vec::with_capacity(len % 64);
            g.push(1);
            for _ in 0..len % 64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                g.push(x as u8);
            }
            if let Ok(s) = MailboxState::decode(&g) {
                // Whatever decodes re-encodes to the same bytes' meaning.
                assert_eq!(MailboxState::decode(&s.to_bytes()).unwrap(), s);
            }
        }
    }

    #[test]
    fn accessors_and_deadline() {
        let s = sample();
        assert_eq!(s.strikes(), 3);
        assert_eq!(s.block_state(), BlockState::Blocked);
        assert_eq!(s.block_state_at(1_700_014_399_999), BlockState::Blocked);
        assert_eq!(s.block_state_at(1_700_014_400_000), BlockState::Unblocked);
        assert_eq!(s.next_deadline(), Some(1_700_014_400_000));
        assert_eq!(s.blocked_at(), Some(1_700_000_000_000));
        assert_eq!(s.tenant_id(), Some("tenant-é"));
        assert_eq!(s.incident_id(), Some(Uuid::from_u128(42).to_string()));
        assert_eq!(MailboxState::default().tenant_id(), None);
        assert_eq!(MailboxState::default().next_deadline(), None);
    }

    #[test]
    fn forgettable() {
        let p = Policy::default();
        let ttl = p.state_idle_ttl_ms;
        assert!(MailboxState::default().is_forgettable(0, &p));
        assert!(!sample().is_forgettable(i64::MAX, &p));
        let mut s = MailboxState {
            touched_at: 1_000,
            ..MailboxState::default()
        };
        s.window.insert(900, "m");
        assert!(!s.is_forgettable(1_000 + ttl, &p));
        assert!(s.is_forgettable(1_000 + ttl + 1, &p));
        s.window.clear();
        s.counting_floor = Some(1_000);
        assert!(!s.is_forgettable(1_000 + ttl, &p));
        assert!(s.is_forgettable(1_000 + ttl + 1, &p));
        s.counting_floor = None;
        s.warned_through = Some(900);
        assert!(!s.is_forgettable(1_000 + ttl, &p));
        assert!(s.is_forgettable(1_000 + ttl + 1, &p));
        s.sim = Some(Simulated {
            strikes: 1,
            until: Some(2_000),
        });
        assert!(!s.is_forgettable(i64::MAX, &p));
    }
}
