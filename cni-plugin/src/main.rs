//! The lash CNI plugin. Skeleton: the CNI issue fills it in (veth pairs,
//! addresses, routes, endpoint registration with the agent).

fn main() {
    // Answer like a CNI plugin that supports nothing yet, so a runtime that calls
    // it gets a spec-shaped error instead of silence.
    println!(
        r#"{{"cniVersion":"1.0.0","code":4,"msg":"lash-cni is not implemented yet","details":"see the CNI issue"}}"#
    );
    std::process::exit(1);
}
