//! `lash-cni`, the CNI plugin (spec 1.1.0, speaking 0.3.0 to 1.1.0).
//!
//! The runtime runs it once per verb: `CNI_*` variables in the environment,
//! the network configuration on stdin, the result or an error object on
//! stdout (stderr gets a one-line log of errors). Every verb validates its
//! input fully. The plugin runs in the node's network namespace and owns the
//! pod's veth pair (made on ADD, removed on DEL and GC); the agent, asked
//! over its local API, gives the address and makes the host end an endpoint
//! of the datapath (maps, attached programs).

mod add;
mod agent;
mod check;
mod config;
mod del;
mod env;
mod error;
mod gc;
mod host_net;
mod lxc_name;
mod mac;
mod netns;
mod pod_net;
mod result;
mod rtnl;
mod verbs;
mod version;
mod veth;

use std::{
    io::{self, Read},
    process::ExitCode,
};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let reply = match io::stdin().read_to_end(&mut stdin) {
        Ok(_) => verbs::run(&|var: &str| std::env::var(var).ok(), &stdin),
        Err(e) => verbs::Reply {
            cni_version: version::CniVersion::LATEST,
            outcome: Err(error::CniError::Stdin(e)),
        },
    };
    match reply.outcome {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            println!("{}", err.to_json(reply.cni_version.as_str()));
            eprintln!(
                "lash-cni: error {}: {} ({})",
                err.code(),
                err.msg(),
                err.details()
            );
            ExitCode::FAILURE
        }
    }
}
