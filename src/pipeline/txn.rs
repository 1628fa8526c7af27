//! Transaction errors, typed, with librdkafka's classification kept, and the one decision the
//! session takes on them: retry the call, abort the transaction and start a new session, start a
//! new session without an abort (the producer is unusable), or stop.
//!
//! librdkafka classifies every error of a transactional call (`rd_kafka_error_t`): *retriable*
//! (the same call may simply be made again, e.g. a coordinator that is loading), *requires
//! abort* (the transaction cannot commit; aborting leaves the producer usable) and *fatal* (the
//! producer is done; only a new one, whose `init_transactions` fences it, recovers). A fenced
//! producer means another instance uses our transactional id: a configuration error.

use std::fmt;
use std::time::Duration;

use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::warn;

/// The transactional calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOp {
    /// `init_transactions`.
    Init,
    /// `begin_transaction`.
    Begin,
    /// Every record of the transaction acknowledged (the flush before the commit).
    Deliver,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit_transaction`.
    Commit,
}

impl TxnOp {
    /// librdkafka's name of the call (the watchdog's and the log's word for it).
    pub fn as_str(self) -> &'static str {
        match self {
            TxnOp::Init => "init_transactions",
            TxnOp::Begin => "begin_transaction",
            TxnOp::Deliver => "flush",
            TxnOp::SendOffsets => "send_offsets_to_transaction",
            TxnOp::Commit => "commit_transaction",
        }
    }
}

impl fmt::Display for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How librdkafka classified an error of a transactional call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Class {
    /// The producer is unusable.
    pub fatal: bool,
    /// The fatal error is a fencing: another producer has our transactional id.
    pub fenced: bool,
    /// The call may be made again.
    pub retriable: bool,
    /// The transaction must be aborted.
    pub requires_abort: bool,
}

impl Class {
    /// The classification of `e`. Errors that are not transactional ones (a flush that timed
    /// out, a client error) carry none: the transaction is aborted.
    pub fn of(e: &RdError) -> Class {
        match e {
            RdError::Transaction(t) => Class {
                fatal: t.is_fatal(),
                fenced: t.is_fatal() && t.code() == RDKafkaErrorCode::Fenced,
                retriable: t.is_retriable(),
                requires_abort: t.txn_requires_abort(),
            },
            _ => Class::default(),
        }
    }
}

/// What the session does about a failed transactional call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make the same call again.
    Retry,
    /// Abort the transaction, then start a new session from the committed offsets.
    Abort,
    /// Start a new session without an abort: the producer is unusable, and the next one's
    /// `init_transactions` aborts its transaction.
    NewSession,
    /// Stop: a new session cannot help (fenced by another instance with our id).
    Stop,
}

/// Calls retried in place at the most, per call.
pub const MAX_RETRIES: u32 = 3;

/// The decision, for a call that failed `attempt` times so far (1 on the first failure).
pub fn decide(class: Class, attempt: u32) -> Action {
    if class.fenced {
        Action::Stop
    } else if class.fatal {
        Action::NewSession
    } else if class.retriable && !class.requires_abort && attempt <= MAX_RETRIES {
        Action::Retry
    } else {
        Action::Abort
    }
}

/// A transactional call failed, with what librdkafka said and the decision taken.
#[derive(Debug, thiserror::Error)]
#[error("transaction: {op}: {source}")]
pub struct TxnError {
    /// The call.
    pub op: TxnOp,
    /// librdkafka's error.
    pub source: RdError,
    /// What the session does about it (never [`Action::Retry`]: retries happen in place).
    pub action: Action,
}

impl TxnError {
    /// Whether the transaction is still open and should be aborted before the session ends.
    pub fn needs_abort(&self) -> bool {
        self.action == Action::Abort
    }
}

/// Runs `call` until it succeeds or [`decide`] says anything but [`Action::Retry`], pausing
/// `pause` between attempts.
pub fn retry<T>(
    op: TxnOp,
    pause: Duration,
    mut call: impl FnMut() -> Result<T, RdError>,
) -> Result<T, TxnError> {
    let mut attempt = 0;
    loop {
        let e = match call() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        attempt += 1;
        match decide(Class::of(&e), attempt) {
            Action::Retry => {
                warn!(call = %op, attempt, error = %e, "retriable transaction error; retrying");
                std::thread::sleep(pause);
            }
            action => {
                return Err(TxnError {
                    op,
                    source: e,
                    action,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRIABLE: Class = Class {
        fatal: false,
        fenced: false,
        retriable: true,
        requires_abort: false,
    };

    #[test]
    fn the_decision_follows_librdkafkas_classification() {
        assert_eq!(decide(RETRIABLE, 1), Action::Retry);
        assert_eq!(decide(RETRIABLE, MAX_RETRIES), Action::Retry);
        assert_eq!(
            decide(RETRIABLE, MAX_RETRIES + 1),
            Action::Abort,
            "retries are bounded"
        );
        let abort = Class {
            requires_abort: true,
            ..RETRIABLE
        };
        assert_eq!(decide(abort, 1), Action::Abort, "abort wins over retry");
        let fatal = Class {
            fatal: true,
            ..Class::default()
        };
        assert_eq!(decide(fatal, 1), Action::NewSession);
        let fenced = Class {
            fenced: true,
            ..fatal
        };
        assert_eq!(decide(fenced, 1), Action::Stop);
        assert_eq!(
            decide(Class::default(), 1),
            Action::Abort,
            "unclassified errors abort"
        );
    }

    #[test]
    fn a_call_that_fails_without_classification_is_not_retried() {
        let mut calls = 0;
        let r: Result<(), _> = retry(TxnOp::Commit, Duration::ZERO, || {
            calls += 1;
            Err(RdError::Flush(RDKafkaErrorCode::OperationTimedOut))
        });
        let e = r.unwrap_err();
        assert_eq!((calls, e.op, e.action), (1, TxnOp::Commit, Action::Abort));
        assert!(e.needs_abort());
        assert_eq!(
            e.to_string(),
            "transaction: commit_transaction: Flush error: OperationTimedOut (Local: Timed out)"
        );
    }
}
