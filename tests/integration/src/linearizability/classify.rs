//! What a failed control API call means for the history: did the write
//! certainly not happen (`Fail`), or may it have happened (`Info`)?
//!
//! The manager gives no machine-readable "not applied" flag, so this reads
//! codes and a few exact messages, and everything it does not recognise is
//! `Info`. That direction is safe: an `Info` that did not happen only
//! weakens the check, a `Fail` that did happen would make the checker
//! report a violation that is not there. Where each case comes from:
//!
//! - `Aborted` "conflicts with a concurrent change": the store's version
//!   check refused the committed entry when it was applied (`StoreError::
//!   Conflict`). Definite, and an observation: the register did not hold the
//!   expected value at that moment.
//! - `InvalidArgument`, `NotFound`, `AlreadyExists`, `FailedPrecondition`,
//!   `PermissionDenied`, `Unauthenticated`: validation before proposing, the
//!   store refusing the entry when applying it, or a daemon that is not a
//!   manager. Definite.
//! - `Unavailable` "leadership changed during the call: retry": openraft's
//!   `ForwardToLeader` from `client_write`, which it documents as "rejected
//!   before its entry was appended" (`raft/node.rs` maps it to
//!   `NotLeader`). Definite.
//! - A transport error whose source is `tonic::ConnectError`: the client
//!   never had a connection, so the request was never sent. Definite.
//! - `Unavailable` "the outcome of the write is unknown" (openraft's
//!   `LogEntryDiscarded`: the entry was appended, then dropped from this
//!   leader's log, and may still commit elsewhere). Indeterminate.
//! - `Unavailable` "cluster has no leader": no leader was found before
//!   proposing, or openraft refused the proposal before appending it.
//!   Definite. A call that ran out of the manager's `REQUEST_TIMEOUT`
//!   (possibly after proposing) is `DeadlineExceeded` instead.
//! - `Unavailable` that says "nothing was changed": a follower could not
//!   connect to the leader to forward the call. Definite.
//! - `Internal` (openraft fatal, shutdown), `Unknown`, `Cancelled`, a lost
//!   connection, the client's own timeout: indeterminate.

use super::history::{FailReason, Outcome};
use tonic::Code;

/// The store's message for a refused compare-and-set.
const CONFLICT_TEXT: &str = "conflicts with a concurrent change";
/// The manager's message for openraft's `ForwardToLeader` on a proposal.
const NOT_LEADER_BEFORE_PROPOSING_TEXT: &str = "leadership changed during the call: retry";
/// The manager's message when it found no leader before proposing.
const NO_LEADER_TEXT: &str = "cluster has no leader";
/// What the manager says when a failed call certainly changed nothing.
const NOTHING_CHANGED_TEXT: &str = "nothing was changed";

/// The outcome of a call that failed with `status`, read as a write
/// (`UpdateConfig`, `CreateConfig`). For a read only the counts use it: a
/// failed read has no effect and observes nothing, either way.
pub fn classify_error(status: &tonic::Status) -> Outcome {
    let message = status.message();
    let refused = || {
        Outcome::Fail(FailReason::Refused {
            reason: message.to_string(),
        })
    };
    match status.code() {
        Code::Aborted if message.contains(CONFLICT_TEXT) => Outcome::Fail(FailReason::Conflict),
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated => refused(),
        Code::Unavailable
            if message == NOT_LEADER_BEFORE_PROPOSING_TEXT
                || message.starts_with(NO_LEADER_TEXT)
                || message.contains(NOTHING_CHANGED_TEXT) =>
        {
            refused()
        }
        _ if rswarm_pki::never_connected(status) => refused(),
        _ => Outcome::Info {
            reason: message.to_string(),
        },
    }
}
