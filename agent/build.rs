//! Builds the kernel programs (ebpf/) for bpfel-unknown-none and leaves the
//! object in OUT_DIR, where src/loader.rs embeds it.
//!
//! The eBPF crate needs Debian's rustc (it ships a prebuilt `core` for the BPF
//! target; see ARCHITECTURE.md, "Toolchain") and bpf-linker on PATH. `cargo xtask
//! setup` installs both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const BPF_TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("agent/ has a parent");
    let ebpf_dir = root.join("ebpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("ebpf-target");

    for p in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=LASH_BPF_RUSTC");

    let rustc = env::var("LASH_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    if !Path::new(&rustc).exists() {
        panic!(
            "{rustc} not found: the eBPF programs need Debian's rustc with the prebuilt BPF core \
             (apt-get install rustc-web libstd-rust-web-dev-bpf). Run `cargo xtask setup` first."
        );
    }
    let path = format!(
        "/usr/lib/llvm-22/bin:{}/.cargo/bin:{}",
        env::var("HOME").unwrap_or_else(|_| "/root".into()),
        env::var("PATH").unwrap_or_default()
    );

    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked", "--target", BPF_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // Start from a clean slate: the variables cargo sets for this build script
    // describe the host build and would leak into the BPF one.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") || k.starts_with("RUSTC") || k == "RUSTFLAGS" || k == "RUSTDOC" {
            cmd.env_remove(k);
        }
    }
    cmd.env("PATH", path)
        .env("RUSTC", &rustc)
        // Only aya-ebpf uses unstable features; everything else stays stable.
        .env("RUSTC_BOOTSTRAP", "1")
        // BTF gives bpftool the field names of our map types.
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf",
        );
    let status = cmd.status().expect("failed to run cargo for ebpf/");
    assert!(status.success(), "building ebpf/ failed: {status}");

    let obj = target_dir.join(BPF_TARGET).join("release").join("lash");
    std::fs::copy(&obj, out_dir.join("lash.bpf.o"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", obj.display()));
}
