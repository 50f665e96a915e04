//! `lash-cni`, the CNI plugin (spec 1.1.0, speaking 0.3.0 to 1.1.0).
//!
//! The runtime runs it once per verb: `CNI_*` variables in the environment,
//! the network configuration on stdin, the result or an error object on
//! stdout (stderr gets a one-line log of errors). Every verb validates its
//! input fully; VERSION is answered here; STATUS, DEL and GC are served with
//! the agent's local API (addresses); ADD and CHECK wait for the pod's
//! interface to be made here and answer "not served yet".

mod agent;
mod config;
mod env;
mod error;
// The host-side device name and the result types are for ADD's back half
// (veth creation, the result it prints); for now CHECK and DEL only read a
// `prevResult` with them.
#[allow(dead_code)]
mod lxc_name;
#[allow(dead_code)]
mod result;
mod verbs;
mod version;

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
