//! Read-only commands on the pinned maps, one module per noun-verb. They work
//! whether or not the agent runs: the maps are the truth.

pub mod bpf_ct_metrics;
pub mod bpf_endpoint_list;
pub mod bpf_ipcache;
pub mod bpf_lb_affinity;
pub mod bpf_lb_list;
pub mod bpf_tunnel;
pub mod endpoint_list;
pub mod node_list;
pub mod service_list;
pub mod status;

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}
