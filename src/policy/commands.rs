//! Admin commands (SPEC §4): a `SUPPORT_UNBLOCK` from role `SUPPORT` lifts a permanent block;
//! the exemption commands go to [`super::exemptions`]; everything else is rejected with a
//! `COMMAND_REJECTED` event and no state change.

use super::exemptions;
use super::model::{
    ActorRole, BlockState, Command, CommandKind, Directory, EventKind, Millis, Outcome, StepResult,
};
use super::records::{self, Events};
use super::state::{CurrentBlock, MailboxState};
use super::text::{self, RejectReason};

/// Why `cmd` must be rejected against `state`, or `None` if it may run. Checked in this order:
/// unknown kind, role, then the target's block (none → not blocked; timed → cannot be ended early).
pub fn rejection(state: &MailboxState, cmd: &Command) -> Option<RejectReason> {
    if let CommandKind::Other(_) = cmd.kind {
        return Some(RejectReason::UnknownKind);
    }
    if cmd.actor_role != ActorRole::Support {
        return Some(RejectReason::RoleNotAllowed(cmd.actor_role));
    }
    match state.block() {
        None => Some(RejectReason::NotBlocked),
        Some(b) => b.blocked_until.map(RejectReason::TimedBlock),
    }
}

/// The `COMMAND_REJECTED` event of `cmd`, with `reason`; nothing else changes.
pub(crate) fn reject(
    state: &MailboxState,
    cmd: &Command,
    reason: RejectReason,
    now: Millis,
    r: &mut StepResult,
) {
    let incident_id = state.incident_id();
    let events = Events {
        mailbox: &cmd.mailbox,
        tenant_id: &cmd.tenant_id,
        incident_id: incident_id.as_deref(),
        id_source: &cmd.command_id,
        now,
    };
    let detail = text::rejected_detail(cmd, reason);
    r.effects.push(events.rejected(detail, reason.code()));
    r.outcomes.push(Outcome::CommandRejected);
}

/// Applies a command (after any lazy expiry).
pub(crate) fn apply(
    state: &mut MailboxState,
    cmd: &Command,
    now: Millis,
    dir: &dyn Directory,
    r: &mut StepResult,
) {
    if matches!(
        cmd.kind,
        CommandKind::ExemptionPut | CommandKind::ExemptionDelete
    ) {
        return exemptions::command(state, cmd, now, dir, r);
    }
    let mailbox = cmd.mailbox.as_str();
    if let Some(reason) = rejection(state, cmd) {
        return reject(state, cmd, reason, now, r);
    }
    // Support unblock of a permanent block.
    // rejection() lets only a permanent block through.
    let Some(block) = state.block.take() else {
        return;
    };
    let incident = block.incident_id.to_string();
    let tenant_id = state
        .tenant_id()
        .unwrap_or(cmd.tenant_id.as_str())
        .to_owned();
    let lifted = CurrentBlock {
        strike: 0,
        blocked_until: None,
        ..block
    };
    r.effects.push(records::block_record(
        mailbox,
        &tenant_id,
        lifted,
        BlockState::Unblocked,
        now,
    ));
    let events = Events {
        mailbox,
        tenant_id: &tenant_id,
        incident_id: Some(&incident),
        id_source: &cmd.command_id,
        now,
    };
    let detail = text::support_unblock_detail(cmd);
    r.effects
        .push(events.event(EventKind::SupportUnblock, "", detail));
    state.strikes = 0;
    state.window.clear();
    state.warned_through = None;
    state.counting_floor = Some(now);
    state.last_block_end = Some(now);
    state.touched_at = now;
    r.state_changed = true;
    r.outcomes.push(Outcome::SupportUnblocked);
}
