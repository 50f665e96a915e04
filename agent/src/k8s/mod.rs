//! Everything that knows Kubernetes: reading Service and EndpointSlice objects
//! (from a directory of manifests or from the API server's watches) and
//! translating them into the load-balancing model of `lb`.
//!
//! Architecture invariant: this is the only module that imports k8s-openapi.

pub mod api_picture;
pub mod api_watch;
pub mod ignored;
pub mod index;
pub mod manifests;
pub mod node_context;
pub mod nodes;
#[cfg(test)]
mod rbac_tests;
pub mod translate;
