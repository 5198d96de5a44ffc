//! May this node take part in the controller? The rule that keeps a node with a wiped data
//! directory from voting or acknowledging again under its old id (it would forget the votes
//! and entries it promised). The decision is a pure function of what this start found on
//! disk and what the peers answered in the transport handshake; the node calls it before it
//! creates any Raft group, and again with each new answer while it is [`Admission::Wait`].
//!
//! Why the peers must be asked: a node that finds an empty data directory cannot tell "the
//! cluster is being created" from "my disk was wiped" on its own, because the operator may
//! run the same command line in both cases (`scripts/cluster.sh wipe 2; … restart 2`). The
//! surviving voters can: they hold the controller's membership. So the peer handshake
//! carries, besides cluster id, node id and protocol version, the answering node's view:
//! whether its controller has been bootstrapped and which nodes are its voters
//! ([`PeerView`]). Decision table (docs/operations/node.md repeats it):
//!
//! "created" below is a `NODE` file with `admitted=0`: written by this start or by an
//! earlier one that was never admitted (it made no Raft promises either way).
//!
//! | identity at start | peer answers                                   | decision           |
//! |-------------------|------------------------------------------------|--------------------|
//! | admitted          | any                                            | Resume             |
//! | created, alone    | (none listed)                                  | Bootstrap          |
//! | created           | any peer of another cluster                    | refuse (mismatch)  |
//! | created           | a bootstrapped peer lists this node as voter   | refuse: rebuild (Rebuild with `--rebuild`) |
//! | created           | a bootstrapped peer, this node not a voter     | Join (as learner)  |
//! | created           | a majority of the initial voters (this one too) answered "not bootstrapped" | Bootstrap |
//! | created           | fewer answers than that                        | Wait               |
//!
//! "Resume" trusts the node's own WAL; a directory with a `NODE` file but lost WAL data is
//! the replica-rebuild issue's concern (the WAL recovery reports it).

use uuid::Uuid;

/// What one peer said about its cluster in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub node_id: u64,
    pub cluster_id: Uuid,
    /// The peer's controller has committed its initial configuration.
    pub bootstrapped: bool,
    /// The voters of the peer's controller (empty when not bootstrapped).
    pub voters: Vec<u64>,
}

/// What the node may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Known directory: start the controller from the WAL.
    Resume,
    /// New cluster: create the controller with the initial voters.
    Bootstrap,
    /// The cluster exists and does not count this node as a voter: start as an empty
    /// learner and wait for `tern cluster add-node`.
    Join,
    /// Not enough answers yet; ask again (bounded by the caller's start-up timeout).
    Wait,
    /// The directory was wiped, the cluster counts this node as a voter, and the operator
    /// asked for a rebuild (`--rebuild`): record `rebuilding=1`, then start every group
    /// non-voting until it is rebuilt (docs/replication.md, section 5).
    Rebuild,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("node {node_id}'s data directory is empty, but cluster {cluster_id} already has node {node_id} as a voter (node {witness} says so): it must not vote or acknowledge before it is rebuilt. Rebuild procedure (docs/operations/node.md): start it again with the same flags plus `--rebuild`; it receives its data from its peers and votes again once rebuilt")]
    WipedVoter {
        node_id: u64,
        cluster_id: Uuid,
        witness: u64,
    },
    #[error("peer node {peer} belongs to cluster {theirs}, this node to cluster {ours}: check --cluster-id and --peers")]
    ClusterMismatch { peer: u64, ours: Uuid, theirs: Uuid },
}

/// The decision for this start. `admitted` is the `NODE` file's flag; `initial_voters` the
/// configured `peers` (this node included); `answers` the peers heard from so far (at most
/// one per node counts). After Bootstrap or Join the caller records the admission
/// (`identity::mark_admitted`) before it creates any Raft group.
pub fn decide(
    admitted: bool,
    node_id: u64,
    cluster_id: Uuid,
    initial_voters: &[u64],
    answers: &[PeerView],
) -> Result<Admission, AdmissionError> {
    if admitted {
        return Ok(Admission::Resume);
    }
    let others: Vec<u64> = initial_voters
        .iter()
        .copied()
        .filter(|&v| v != node_id)
        .collect();
    if others.is_empty() {
        return Ok(Admission::Bootstrap);
    }
    if let Some(a) = answers.iter().find(|a| a.cluster_id != cluster_id) {
        return Err(AdmissionError::ClusterMismatch {
            peer: a.node_id,
            ours: cluster_id,
            theirs: a.cluster_id,
        });
    }
    if let Some(a) = answers
        .iter()
        .find(|a| a.bootstrapped && a.voters.contains(&node_id))
    {
        return Err(AdmissionError::WipedVoter {
            node_id,
            cluster_id,
            witness: a.node_id,
        });
    }
    if answers.iter().any(|a| a.bootstrapped) {
        return Ok(Admission::Join);
    }
    let mut fresh: Vec<u64> = answers
        .iter()
        .filter(|a| others.contains(&a.node_id))
        .map(|a| a.node_id)
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    // This node counts as one fresh initial voter. A majority of fresh initial voters means
    // no majority can have committed the initial configuration without one of them.
    let voters = others.len() + 1;
    let majority = voters / 2 + 1;
    if fresh.len() + 1 >= majority {
        Ok(Admission::Bootstrap)
    } else {
        Ok(Admission::Wait)
    }
}

/// [`decide`] for a start with or without `--rebuild`: the one refusal the flag turns into
/// an admission is the wiped voter's. Everything else (another cluster, not enough answers,
/// an admitted directory) is decided as without it.
pub fn decide_start(
    rebuild: bool,
    admitted: bool,
    node_id: u64,
    cluster_id: Uuid,
    initial_voters: &[u64],
    answers: &[PeerView],
) -> Result<Admission, AdmissionError> {
    match decide(admitted, node_id, cluster_id, initial_voters, answers) {
        Err(AdmissionError::WipedVoter { .. }) if rebuild => Ok(Admission::Rebuild),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the peers answer, a new node is never admitted (Bootstrap or Join) when
        /// any bootstrapped peer of its cluster counts it as a voter, and never bootstraps
        /// while a peer says the cluster exists.
        #[test]
        fn prop_a_known_voter_with_a_new_directory_is_never_admitted(
            node_id in 1u64..6,
            voters in prop::collection::btree_set(1u64..6, 1..6),
            answers in prop::collection::vec(
                (1u64..8, any::<bool>(), prop::collection::vec(1u64..6, 0..5)),
                0..8,
            ),
        ) {
            let c = Uuid::from_u128(7);
            let mut initial: Vec<u64> = voters.into_iter().collect();
            if !initial.contains(&node_id) {
                initial.push(node_id);
            }
            let views: Vec<PeerView> = answers
                .into_iter()
                .filter(|(id, _, _)| *id != node_id)
                .map(|(id, bootstrapped, voters)| PeerView {
                    node_id: id,
                    cluster_id: c,
                    bootstrapped,
                    voters: if bootstrapped { voters } else { vec![] },
                })
                .collect();
            let decision = decide(false, node_id, c, &initial, &views);
            let known = views.iter().any(|v| v.bootstrapped && v.voters.contains(&node_id));
            let exists = views.iter().any(|v| v.bootstrapped);
            match decision {
                Ok(Admission::Bootstrap) => prop_assert!(!exists || initial.len() == 1),
                Ok(Admission::Join) => prop_assert!(!known && exists),
                Ok(Admission::Resume) => prop_assert!(false, "a new directory never resumes"),
                Ok(Admission::Wait) => prop_assert!(!exists),
                Ok(Admission::Rebuild) => prop_assert!(false, "only decide_start rebuilds"),
                Err(AdmissionError::WipedVoter { .. }) => prop_assert!(known),
                Err(AdmissionError::ClusterMismatch { .. }) => prop_assert!(false),
            }
            if known && initial.len() > 1 {
                prop_assert!(decision.is_err());
            }
        }
    }

    fn view(node_id: u64, cluster_id: Uuid, voters: &[u64]) -> PeerView {
        PeerView {
            node_id,
            cluster_id,
            bootstrapped: !voters.is_empty(),
            voters: voters.to_vec(),
        }
    }

    #[test]
    fn decision_table() {
        let c = Uuid::new_v4();
        let other = Uuid::new_v4();
        let three = [1, 2, 3];
        #[allow(non_upper_case_globals)]
        const Created: bool = false;
        assert_eq!(decide(true, 2, c, &three, &[]), Ok(Admission::Resume));
        assert_eq!(decide(Created, 1, c, &[], &[]), Ok(Admission::Bootstrap));
        assert_eq!(decide(Created, 1, c, &[1], &[]), Ok(Admission::Bootstrap));
        assert_eq!(decide(Created, 2, c, &three, &[]), Ok(Admission::Wait));
        assert_eq!(
            decide(Created, 2, c, &three, &[view(1, c, &[])]),
            Ok(Admission::Bootstrap)
        );
        // An answer from a node that is not an initial voter does not make a majority.
        assert_eq!(
            decide(Created, 2, c, &three, &[view(9, c, &[])]),
            Ok(Admission::Wait)
        );
        let five = [1, 2, 3, 4, 5];
        assert_eq!(
            decide(Created, 2, c, &five, &[view(1, c, &[]), view(1, c, &[])]),
            Ok(Admission::Wait),
            "the same peer twice counts once"
        );
        assert_eq!(
            decide(Created, 2, c, &five, &[view(1, c, &[]), view(4, c, &[])]),
            Ok(Admission::Bootstrap)
        );
        assert_eq!(
            decide(Created, 4, c, &three, &[view(1, c, &[1, 2, 3])]),
            Ok(Admission::Join)
        );
        let err = decide(
            Created,
            2,
            c,
            &three,
            &[view(1, c, &[]), view(3, c, &[1, 2, 3])],
        )
        .unwrap_err();
        assert_eq!(
            err,
            AdmissionError::WipedVoter {
                node_id: 2,
                cluster_id: c,
                witness: 3
            }
        );
        assert!(err.to_string().contains("Rebuild procedure"), "{err}");
        assert!(matches!(
            decide(Created, 2, c, &three, &[view(1, other, &[])]),
            Err(AdmissionError::ClusterMismatch { peer: 1, .. })
        ));
    }

    #[test]
    fn rebuild_flag_turns_only_the_wiped_voter_refusal_into_a_rebuild() {
        let c = Uuid::new_v4();
        let three = [1, 2, 3];
        let wiped = [view(3, c, &[1, 2, 3])];
        assert_eq!(
            decide_start(true, false, 2, c, &three, &wiped),
            Ok(Admission::Rebuild)
        );
        assert!(matches!(
            decide_start(false, false, 2, c, &three, &wiped),
            Err(AdmissionError::WipedVoter { .. })
        ));
        // Not wiped (admitted earlier): the flag changes nothing.
        assert_eq!(
            decide_start(true, true, 2, c, &three, &[]),
            Ok(Admission::Resume)
        );
        // A new cluster, another cluster, too few answers: decided as without the flag.
        assert_eq!(
            decide_start(true, false, 2, c, &three, &[view(1, c, &[])]),
            Ok(Admission::Bootstrap)
        );
        assert_eq!(
            decide_start(true, false, 2, c, &three, &[]),
            Ok(Admission::Wait)
        );
        assert!(matches!(
            decide_start(true, false, 2, c, &three, &[view(1, Uuid::new_v4(), &[])]),
            Err(AdmissionError::ClusterMismatch { .. })
        ));
    }
}
