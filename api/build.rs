//! Generates the gRPC code of proto/ with a vendored protoc, so building needs
//! nothing from the system.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    // SAFETY (of the process): build scripts are single-threaded here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/lash/v1/cni.proto"], &["proto"])
        .expect("compiling proto/lash/v1/cni.proto");
}
