//! Test support for lash: sandboxes of network namespaces with stand-in pods,
//! and helpers to drive the agent and probe binaries inside them. Used by the
//! integration tests in tests/tests/, by `cargo xtask demo` and by the bench;
//! `cluster` joins several sandboxes into a simulated multi-node cluster.

pub mod apiserver;
pub mod capture;
pub mod cluster;
pub mod cni;
pub mod ebpf;
pub mod http;
pub mod manifests;
pub mod netns;
pub mod podman;
pub mod sandbox;
