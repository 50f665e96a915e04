//! DEL: the veth (its peer goes with it, and the host route with the
//! device), the agent's endpoint, then the address, so an address is free
//! only once nothing routes to it. Each step is a success when there is
//! nothing to remove, so DEL can run any number of times, and without the
//! namespace (the runtime may have removed it already).

use crate::{error::CniError, rtnl, verbs::Call, veth};

pub fn del(call: &Call) -> Result<(), CniError> {
    let host = call.host_ifname();
    rtnl::with_handle(async |h| veth::delete(h, &host).await).map_err(|e| call.net_failed(e))?;
    call.agent
        .delete_endpoint(call.attachment())
        .map_err(|p| call.agent_failed(p))?;
    call.agent
        .release(call.attachment())
        .map_err(|p| call.agent_failed(p))?;
    Ok(())
}
