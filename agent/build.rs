//! Builds the kernel programs (ebpf/) for bpfel-unknown-none and leaves the
//! object in OUT_DIR, where src/loader.rs embeds it. The build command itself
//! lives in ebpf/cargo_cmd.rs.

#[path = "../ebpf/cargo_cmd.rs"]
mod cargo_cmd;

use std::{env, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("agent/ has a parent");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("ebpf-target");

    for p in [
        "ebpf/src",
        "ebpf/cargo_cmd.rs",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=LASH_BPF_RUSTC");

    let mut cmd = cargo_cmd::command(&root.join("ebpf"), &target_dir, "lash")
        .unwrap_or_else(|e| panic!("{e}"));
    let status = cmd.status().expect("failed to run cargo for ebpf/");
    assert!(status.success(), "building ebpf/ failed: {status}");

    let obj = cargo_cmd::object(&target_dir, "lash");
    std::fs::copy(&obj, out_dir.join("lash.bpf.o"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
}
