//! Single-voter starts (`--standalone`, or no `--peers`) against what the data directory's
//! controller says: the decision of docs/operations/node.md, "Standalone".
//!
//! A node's controller configuration is what its snapshot or configuration entries say, or,
//! when the directory has neither, the configured initial voters. Two mismatches are refused
//! at start, before the node serves anything:
//! - configured alone, but the directory's controller names other voters: the node was (or
//!   is) part of a multi-node cluster. It would never elect a controller (it needs a
//!   majority of those voters), and forcing a single-voter configuration would let this node
//!   and the rest of the cluster accept writes independently (two histories of one cluster).
//! - configured with other voters, but the directory's controller is this node alone (it ran
//!   standalone, then took a snapshot): the others would bootstrap the configured voters
//!   while this node keeps its own, and two controllers could be elected. Growing a
//!   standalone node into a cluster is a membership change, not a restart with new flags.
//!
//! A group's configuration before its first snapshot or configuration entry is not stored
//! (it is the configured one at every start), so the first rule also looks at the members
//! the controller's committed commands registered ([`check_controller_members`]): a
//! directory of a multi-node cluster names them from its first commands on.

use tern_raft::message::{ConfState, NodeId};

use super::controller::ControllerState;

/// Checks the controller configuration found at start against the configured voters.
pub fn check_controller_conf(
    node_id: NodeId,
    configured: &[NodeId],
    found: &ConfState,
) -> Result<(), String> {
    let alone = [node_id];
    let configured_alone = configured == alone;
    let found_alone = found.voters == alone && found.voters_outgoing.is_empty();
    if configured_alone && !found_alone {
        return Err(format!(
            "this node is configured as a single-voter cluster (--standalone, or no --peers), \
             but its data directory's controller has the voters {:?}: it belongs to a \
             multi-node cluster. Refused: it could never elect a controller alone, and forcing \
             a single-voter configuration would give the cluster two histories. Start it with \
             --peers naming the cluster's voters, or restore the data into a new directory \
             (docs/operations/node.md, \"Standalone\")",
            found.members()
        ));
    }
    if found_alone && !configured_alone {
        return Err(format!(
            "this node's data directory holds a single-voter controller (it ran standalone), \
             but --peers names the voters {configured:?}: the others would start a controller \
             of their own beside this one. Refused: restart it standalone (or with no \
             --peers) and grow the cluster by membership change \
             (docs/operations/node.md, \"Standalone\"); after --force-new-cluster, until the \
             other nodes are added back, start it with --force-new-cluster again (it changes \
             nothing already done)"
        ));
    }
    Ok(())
}

/// For a node configured alone: refuses a controller state (its snapshot plus its committed
/// commands, replayed at start) that registered other members.
pub fn check_controller_members(
    node_id: NodeId,
    configured: &[NodeId],
    state: &ControllerState,
) -> Result<(), String> {
    let others: Vec<u64> = state
        .members()
        .keys()
        .copied()
        .filter(|&m| m != node_id)
        .collect();
    if configured == [node_id] && !others.is_empty() {
        return Err(format!(
            "this node is configured as a single-voter cluster (--standalone, or no --peers), \
             but its data directory's controller has registered the members {others:?} \
             besides it: it belongs to a multi-node cluster. Refused: alone it would elect \
             itself and write a history the rest of the cluster does not have. Start it with \
             --peers naming the cluster's voters, or restore the data into a new directory \
             (docs/operations/node.md, \"Standalone\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::controller::{Command, Member};

    fn member(id: u64) -> Member {
        let ip = std::net::IpAddr::from([127, 0, 0, id as u8]);
        Member {
            node_id: id,
            peer_addr: (ip, 9093).into(),
            kafka_addr: (ip, 9092).into(),
            http_addr: (ip, 9090).into(),
        }
    }

    #[test]
    fn registered_members_reveal_a_cluster_directory() {
        let mut state = ControllerState::default();
        check_controller_members(1, &[1], &state).unwrap();
        state.apply(1, &Command::AddMember(member(1))).unwrap();
        check_controller_members(1, &[1], &state).unwrap();
        state.apply(2, &Command::AddMember(member(2))).unwrap();
        let err = check_controller_members(1, &[1], &state).unwrap_err();
        assert!(err.contains("[2]"), "{err}");
        // Configured with its peers, the same state is the normal case.
        check_controller_members(1, &[1, 2], &state).unwrap();
    }

    #[test]
    fn matching_configurations_start() {
        check_controller_conf(1, &[1], &ConfState::with_voters(&[1])).unwrap();
        check_controller_conf(2, &[1, 2, 3], &ConfState::with_voters(&[1, 2, 3])).unwrap();
        // A cluster whose membership changed since its initial voters were configured.
        check_controller_conf(2, &[1, 2, 3], &ConfState::with_voters(&[2, 3, 4])).unwrap();
    }

    #[test]
    fn a_cluster_directory_is_refused_standalone() {
        let err = check_controller_conf(1, &[1], &ConfState::with_voters(&[1, 2, 3])).unwrap_err();
        assert!(err.contains("[1, 2, 3]"), "{err}");
        assert!(err.contains("--peers"), "{err}");
        // Leaving a joint configuration counts as naming other voters too.
        let joint = ConfState {
            voters: vec![1],
            voters_outgoing: vec![1, 2],
            learners: vec![],
        };
        assert!(check_controller_conf(1, &[1], &joint).is_err());
    }

    #[test]
    fn a_standalone_directory_is_refused_with_peers() {
        let err = check_controller_conf(1, &[1, 2, 3], &ConfState::with_voters(&[1])).unwrap_err();
        assert!(err.contains("[1, 2, 3]"), "{err}");
        assert!(err.contains("membership change"), "{err}");
    }
}
