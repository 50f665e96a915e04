//! How to build the programs of this directory, in one place: included (by
//! `#[path]`) from agent/build.rs, which embeds the `lash` object, and from
//! xtask's bench, which builds the `lash-floor` object at run time.
//!
//! The eBPF crate needs Debian's rustc (it ships a prebuilt `core` for the BPF
//! target; see ARCHITECTURE.md, "Toolchain") and bpf-linker on PATH. `cargo xtask
//! setup` installs both.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// `cargo build --release` of ebpf/'s binary `bin` for the BPF target, into
/// `target_dir`; Err when Debian's rustc is missing.
pub fn command(ebpf_dir: &Path, target_dir: &Path, bin: &str) -> Result<Command, String> {
    let rustc = env::var("LASH_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    if !Path::new(&rustc).exists() {
        return Err(format!(
            "{rustc} not found: the eBPF programs need Debian's rustc with the prebuilt BPF core \
             (apt-get install rustc-web libstd-rust-web-dev-bpf). Run `cargo xtask setup` first."
        ));
    }
    let path = format!(
        "/usr/lib/llvm-22/bin:{}/.cargo/bin:{}",
        env::var("HOME").unwrap_or_else(|_| "/root".into()),
        env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ebpf_dir)
        .args(["build", "--release", "--locked", "--target", BPF_TARGET])
        .args(["--bin", bin])
        .arg("--target-dir")
        .arg(target_dir);
    // Start from a clean slate: the variables cargo sets for a build script or
    // a `cargo run` describe the host build and would leak into the BPF one.
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
    Ok(cmd)
}

/// Where `command` leaves the object of binary `bin`.
pub fn object(target_dir: &Path, bin: &str) -> PathBuf {
    target_dir.join(BPF_TARGET).join("release").join(bin)
}
