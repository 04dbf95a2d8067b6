//! Turning the changes of a pass into proposals: batches of at most
//! [`PROPOSAL_ACTIONS_MAX`] actions and [`PROPOSAL_BYTES_MAX`] bytes.
//!
//! **Invariants:** a slot's changes are never split across proposals (so
//! "old task stopped" and "its replacement created" commit together); a
//! service's own write comes after all of its task changes; each proposal
//! knows which services it touches, so a refused one can be planned again.

use std::collections::BTreeSet;

use prost::Message;
use rswarm_proto::StoreAction;

use super::limits::{PROPOSAL_ACTIONS_MAX, PROPOSAL_BYTES_MAX};
use super::work::Changes;

/// Changes per service ID, in planning order.
pub type ServiceChanges = Vec<(String, Changes)>;

/// One proposal's worth of actions.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The actions, in order.
    pub actions: Vec<StoreAction>,
    /// The services whose changes are (partly) in it.
    pub services: BTreeSet<String>,
    bytes: usize,
}

/// Takes the service writes out of the changes, to be proposed after every
/// task change (each as its own one-action group).
pub fn split_service_writes(changes: ServiceChanges) -> (ServiceChanges, ServiceChanges) {
    let mut writes = Vec::new();
    let tasks = changes
        .into_iter()
        .map(|(id, mut c)| {
            if let Some(write) = c.service.take() {
                writes.push((
                    id.clone(),
                    Changes {
                        slot_groups: vec![vec![write]],
                        service: None,
                    },
                ));
            }
            (id, c)
        })
        .collect();
    (tasks, writes)
}

/// Splits the per-service changes into proposals. A group larger than a
/// proposal on its own (it cannot happen with slot-sized groups) still goes
/// out, alone, and the store decides.
pub fn into_chunks(changes: ServiceChanges) -> Vec<Chunk> {
    into_chunks_with(changes, PROPOSAL_ACTIONS_MAX, PROPOSAL_BYTES_MAX)
}

/// [`into_chunks`] with explicit limits (for tests).
pub fn into_chunks_with(
    changes: ServiceChanges,
    actions_max: usize,
    bytes_max: usize,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut current = Chunk::default();
    for (service_id, service_changes) in changes {
        let groups = service_changes
            .slot_groups
            .into_iter()
            .chain(service_changes.service.map(|a| vec![a]));
        for group in groups {
            let bytes: usize = group.iter().map(Message::encoded_len).sum();
            let fits = current.actions.len() + group.len() <= actions_max
                && current.bytes + bytes <= bytes_max;
            if !fits && !current.actions.is_empty() {
                chunks.push(std::mem::take(&mut current));
            }
            current.actions.extend(group);
            current.bytes += bytes;
            current.services.insert(service_id.clone());
        }
    }
    if !current.actions.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use rswarm_proto::object::Kind;
    use rswarm_proto::{ActionKind, Meta, Service, Task};

    use super::*;
    use crate::manager::action;

    fn task(id: &str) -> StoreAction {
        action(
            ActionKind::Create,
            Kind::Task(Task {
                meta: Some(Meta {
                    id: id.to_owned(),
                    ..Meta::default()
                }),
                ..Task::default()
            }),
        )
    }

    fn service(id: &str) -> StoreAction {
        action(
            ActionKind::Update,
            Kind::Service(Service {
                meta: Some(Meta {
                    id: id.to_owned(),
                    ..Meta::default()
                }),
                ..Service::default()
            }),
        )
    }

    fn changes(groups: &[usize], with_service: bool) -> Changes {
        Changes {
            slot_groups: groups
                .iter()
                .enumerate()
                .map(|(g, n)| (0..*n).map(|i| task(&format!("g{g}t{i}"))).collect())
                .collect(),
            service: with_service.then(|| service("s")),
        }
    }

    #[test]
    fn groups_are_never_split_and_the_service_write_comes_last() {
        let chunks = into_chunks_with(
            vec![("s".to_owned(), changes(&[2, 2, 2], true))],
            3,
            usize::MAX,
        );
        let sizes: Vec<usize> = chunks.iter().map(|c| c.actions.len()).collect();
        assert_eq!(
            sizes,
            vec![2, 2, 3],
            "2+2 > 3, so each pair goes alone; the write joins the last"
        );
        let last = chunks.last().unwrap().actions.last().unwrap();
        assert!(matches!(
            last.object.as_ref().and_then(|o| o.kind.as_ref()),
            Some(Kind::Service(_))
        ));
    }

    #[test]
    fn a_hundred_thousand_creates_make_a_hundred_proposals() {
        let groups = vec![1; 100_000];
        let chunks = into_chunks(vec![("s".to_owned(), changes(&groups, false))]);
        assert_eq!(chunks.len(), 100);
        assert!(
            chunks
                .iter()
                .all(|c| c.actions.len() == PROPOSAL_ACTIONS_MAX)
        );
    }

    #[test]
    fn chunks_know_their_services_and_respect_the_byte_limit() {
        let one = task("g0t0").encoded_len();
        let chunks = into_chunks_with(
            vec![
                ("a".to_owned(), changes(&[1, 1], false)),
                ("b".to_owned(), changes(&[1], false)),
            ],
            100,
            one * 2,
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].services, BTreeSet::from(["a".to_owned()]));
        assert_eq!(chunks[1].services, BTreeSet::from(["b".to_owned()]));
    }
}
