//! The store's error type. It crosses the Raft response (serde) and reaches
//! users unchanged, so every message is lower-case, complete, and says what
//! to do next.

use serde::{Deserialize, Serialize};

use super::limits::{AMBIGUOUS_LIST_MAX, WATCH_QUEUE_MAX};
use super::object::ObjectKind;

/// Why the store refused a batch, a lookup or a watch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist.
    #[error("{kind} {id} not found: list the {plural} to see the current ones", plural = .kind.plural())]
    NotFound {
        /// Kind of the missing object.
        kind: ObjectKind,
        /// Its ID.
        id: String,
    },
    /// A create named an ID that is already taken.
    #[error("{kind} {id} already exists: create it under a new id")]
    AlreadyExists {
        /// Kind of the object.
        kind: ObjectKind,
        /// The taken ID.
        id: String,
    },
    /// Another object of the same kind already has this name.
    #[error(
        "a {kind} named \"{name}\" already exists: pick another name, or rename or remove the other {kind}"
    )]
    NameConflict {
        /// Kind of the object.
        kind: ObjectKind,
        /// The name in use.
        name: String,
    },
    /// An update or delete was based on an outdated read of the object.
    #[error(
        "{op} of {kind} {id} conflicts with a concurrent change (version {got} was read, the store is at {expected}): read it again and retry"
    )]
    Conflict {
        /// What was attempted.
        op: WriteOp,
        /// Kind of the object.
        kind: ObjectKind,
        /// Its ID.
        id: String,
        /// The version in the store.
        expected: u64,
        /// The version the writer read.
        got: u64,
    },
    /// The batch is malformed (missing object or ID, unknown action, ...).
    #[error("invalid change: {reason}")]
    Invalid {
        /// What is wrong, lower-case.
        reason: String,
    },
    /// An object or a batch is over its size limit.
    #[error("{what} is {size} bytes, over the limit of {max} bytes: make it smaller or split it")]
    TooLarge {
        /// What is too large ("proposal", "node abc", ...).
        what: String,
        /// Its encoded size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A user reference (name or ID prefix) matches several objects.
    #[error("ambiguous: {by} \"{reference}\" matches {count} {plural}: {list}",
        count = .matches.len(), plural = .kind.plural(), list = list_ids(.matches))]
    Ambiguous {
        /// Kind searched.
        kind: ObjectKind,
        /// How the reference matched.
        by: MatchBy,
        /// What the user typed.
        reference: String,
        /// IDs of all matching objects, sorted.
        matches: Vec<String>,
    },
    /// A user reference matches no object by ID, name or ID prefix.
    #[error("no {kind} matches \"{reference}\": list the {plural} to see their ids and names", plural = .kind.plural())]
    NotFoundByReference {
        /// Kind searched.
        kind: ObjectKind,
        /// What the user typed.
        reference: String,
    },
    /// A watch asked for changes older than the retained history.
    #[error(
        "watch history starts at version {oldest}: list again and watch from the listed version"
    )]
    Compacted {
        /// The oldest version a watch may start from.
        oldest: u64,
    },
    /// A watcher fell too far behind and was ended rather than skip changes.
    #[error(
        "the watch fell too far behind the store (more than {WATCH_QUEUE_MAX} batches of changes) and was ended: list again and watch from the listed version"
    )]
    Lagged,
    /// A snapshot could not be turned into a store.
    #[error("the store snapshot is invalid: {reason}")]
    InvalidSnapshot {
        /// What is wrong with it.
        reason: String,
    },
}

/// The write that met a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// An UPDATE action.
    Update,
    /// A DELETE action.
    Delete,
}

impl std::fmt::Display for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteOp::Update => "update",
            WriteOp::Delete => "delete",
        })
    }
}

/// How an ambiguous reference matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchBy {
    /// Several objects have this exact name.
    Name,
    /// Several IDs start with this prefix.
    Prefix,
}

impl std::fmt::Display for MatchBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatchBy::Name => "name",
            MatchBy::Prefix => "prefix",
        })
    }
}

/// "id1, id2, id3", at most [`AMBIGUOUS_LIST_MAX`] of them, then "and N more".
fn list_ids(ids: &[String]) -> String {
    let shown = ids.iter().take(AMBIGUOUS_LIST_MAX).map(String::as_str);
    let mut out = shown.collect::<Vec<_>>().join(", ");
    if ids.len() > AMBIGUOUS_LIST_MAX {
        out.push_str(&format!(" and {} more", ids.len() - AMBIGUOUS_LIST_MAX));
    }
    out
}
