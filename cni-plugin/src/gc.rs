//! GC: the runtime lists the attachments that are alive; everything else
//! goes. The agent's endpoints and addresses, and host veths that no live
//! attachment owns (an ADD that crashed before its rollback, a DEL that
//! never came). Each step runs even if one before it failed, and every
//! failure is reported.

use lash_api::Attachment;

use crate::{
    error::CniError,
    lxc_name,
    rtnl::{self, NetError},
    verbs::Call,
    veth,
};

pub fn gc(call: &Call, keep: &[Attachment]) -> Result<(), CniError> {
    let mut failures = Vec::new();
    if let Err(p) = call.agent.retain_endpoints(keep.to_vec()) {
        failures.push(call.agent_failed(p));
    }
    if let Err(p) = call.agent.retain(keep.to_vec()) {
        failures.push(call.agent_failed(p));
    }
    let deleted = rtnl::with_handle(async |h| -> Result<Vec<NetError>, NetError> {
        let links = rtnl::all_links(h).await?;
        let veths = links
            .iter()
            .filter(|l| rtnl::is_veth(l))
            .filter_map(rtnl::link_name);
        let mut problems = Vec::new();
        for name in stale_links(veths, keep) {
            if let Err(e) = veth::delete(h, &name).await {
                problems.push(e);
            }
        }
        Ok(problems)
    });
    match deleted {
        Ok(problems) => failures.extend(problems.into_iter().map(|e| call.net_failed(e))),
        Err(e) => failures.push(call.net_failed(e)),
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(CniError::Several(failures)),
    }
}

/// Of the node's veths, those named as our host ends that no attachment in
/// `keep` would have made. Only names of our exact shape count: other
/// software's `lxc…` devices (LXC's `lxcbr0`, Cilium's `lxc_health`) are not
/// ours to delete.
fn stale_links<'a>(veths: impl IntoIterator<Item = &'a str>, keep: &[Attachment]) -> Vec<String> {
    let owned: Vec<String> = keep
        .iter()
        .map(|a| lxc_name::host_veth_name(&a.container_id, &a.ifname))
        .collect();
    veths
        .into_iter()
        .filter(|name| lxc_name::is_host_veth_name(name) && !owned.iter().any(|o| o == name))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_unlisted_lxc_devices_are_stale() {
        let keep = [Attachment::new("abc123", "eth0")];
        let live = lxc_name::host_veth_name("abc123", "eth0");
        let dead = lxc_name::host_veth_name("def456", "eth0");
        let links = [
            live.as_str(),
            dead.as_str(),
            "lxcbr0",
            "lxc_health",
            "lxc1",
            "eth0",
            "lxc0123456789AB",
            "lxc0123456789abc",
        ];
        assert_eq!(stale_links(links, &keep), vec![dead.clone()]);
        // With nothing alive, every one of ours goes; still nothing else.
        assert_eq!(stale_links(links, &[]), vec![live, dead]);
    }

    #[test]
    fn the_ifname_is_part_of_what_is_kept() {
        let keep = [Attachment::new("abc123", "eth0")];
        let other_if = lxc_name::host_veth_name("abc123", "net1");
        assert_eq!(stale_links([other_if.as_str()], &keep), vec![other_if]);
    }
}
