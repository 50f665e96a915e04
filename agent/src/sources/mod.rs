//! Where desired state comes from. Each source runs as a task, keeps its own
//! index of what it knows, and sends [`crate::datapath::Command`]s to the map
//! owner; none of them touches a map. (`cni_api` is the exception that
//! proves it: it hands endpoints to [`crate::endpoints::Manager`], the one
//! owner of the endpoint maps, as the others hand services to the map owner.)
//!
//! - `manifest_dir`: a directory of Service and EndpointSlice manifests
//!   (standalone mode).
//! - `kube_api`: the Kubernetes API's Services and EndpointSlices, through
//!   kube-rs watchers.
//! - `cni_api`: the local gRPC API lash-cni calls (addresses, endpoints),
//!   with `cni_messages` between its messages and the agent's types.
//! - `nodes_out`: the channel both Kubernetes-shaped sources publish the
//!   cluster's nodes on, for the mesh.

pub mod cni_api;
mod cni_messages;
pub mod kube_api;
#[cfg(test)]
mod kube_api_tests;
pub mod manifest_dir;
pub mod nodes_out;
