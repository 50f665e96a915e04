//! Where sources put the cluster's nodes for the mesh: a watch channel
//! holding the latest whole list (None until the source has listed its
//! nodes once, so the mesh never removes a node because a list was not in
//! yet). Only a list that differs from the last one wakes the mesh.

use tokio::sync::watch;

use crate::model::ClusterNode;

pub type NodesTx = watch::Sender<Option<Vec<ClusterNode>>>;
pub type NodesRx = watch::Receiver<Option<Vec<ClusterNode>>>;

pub fn channel() -> (NodesTx, NodesRx) {
    watch::channel(None)
}

/// Publishes `nodes` (sorted here) if it differs from what was published.
pub fn publish(tx: &NodesTx, mut nodes: Vec<ClusterNode>) {
    nodes.sort();
    tx.send_if_modified(|cur| {
        if cur.as_ref() == Some(&nodes) {
            false
        } else {
            *cur = Some(nodes);
            true
        }
    });
}
