//! Where desired state comes from. Each source runs as a task, keeps its own
//! index of what it knows, and sends [`crate::datapath::Command`]s to the map
//! owner; none of them touches a map. (`cni_api` sends none yet: it serves
//! addresses from IPAM until endpoints, which are map state, join it.)
//!
//! - `manifest_dir`: a directory of Service and EndpointSlice manifests
//!   (standalone mode).
//! - `cni_api`: the local gRPC API lash-cni calls (addresses today;
//!   endpoints next).

pub mod cni_api;
pub mod manifest_dir;
