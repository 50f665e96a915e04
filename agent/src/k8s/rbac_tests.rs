//! deploy/rbac.yaml must let the agent do what it does: get, list and watch
//! every kind it reads. The kinds come from the types the watches use, so a
//! new watch without its rule fails here rather than on a cluster.

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
    rbac::v1::ClusterRole,
};
use kube::Resource;
use serde::Deserialize;

const RBAC: &str = include_str!("../../../deploy/rbac.yaml");

fn cluster_role() -> ClusterRole {
    serde_yaml::Deserializer::from_str(RBAC)
        .filter_map(|doc| {
            let v = serde_yaml::Value::deserialize(doc).expect("rbac.yaml parses");
            (v["kind"] == "ClusterRole").then(|| serde_yaml::from_value(v).expect("a ClusterRole"))
        })
        .next()
        .expect("rbac.yaml holds a ClusterRole")
}

fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    role.rules.iter().flatten().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn the_cluster_role_grants_every_watched_kind() {
    let role = cluster_role();
    let kinds = [
        (Service::group(&()), Service::plural(&())),
        (EndpointSlice::group(&()), EndpointSlice::plural(&())),
        (Node::group(&()), Node::plural(&())),
    ];
    for (group, plural) in kinds {
        for verb in ["get", "list", "watch"] {
            assert!(
                allows(&role, &group, &plural, verb),
                "rbac.yaml does not let the agent {verb} {plural} ({group:?})"
            );
        }
    }
    // Read-only: nothing the agent could change the cluster with.
    for r in role.rules.iter().flatten() {
        for v in &r.verbs {
            assert!(["get", "list", "watch"].contains(&v.as_str()), "verb {v}");
        }
    }
}
