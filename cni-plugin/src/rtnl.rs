//! A route-netlink connection for one batch of work, in the namespace of the
//! calling thread, and the lookups every verb needs (a link by name, its
//! MAC and kind).

use std::{fmt, io};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::Handle;

use crate::mac::Mac;

/// A netlink request (or a sysctl write) that failed: what we were doing and
/// what the kernel said.
#[derive(Debug)]
pub struct NetError {
    pub doing: String,
    pub reason: String,
    /// The errno, when the kernel gave one.
    pub errno: Option<i32>,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.doing, self.reason)
    }
}

impl std::error::Error for NetError {}

impl NetError {
    pub fn netlink(doing: impl Into<String>, e: rtnetlink::Error) -> NetError {
        match e {
            rtnetlink::Error::NetlinkError(msg) => {
                let io = msg.to_io();
                NetError {
                    doing: doing.into(),
                    reason: io.to_string(),
                    errno: io.raw_os_error(),
                }
            }
            other => NetError {
                doing: doing.into(),
                reason: other.to_string(),
                errno: None,
            },
        }
    }

    pub fn io(doing: impl Into<String>, e: io::Error) -> NetError {
        NetError {
            doing: doing.into(),
            reason: e.to_string(),
            errno: e.raw_os_error(),
        }
    }

    /// The kernel's "no such device": the link is not there.
    pub fn is_no_device(&self) -> bool {
        self.errno == Some(libc::ENODEV)
    }
}

/// Runs `work` with a fresh netlink connection on a current-thread runtime,
/// so the socket belongs to the calling thread's network namespace.
pub fn with_handle<T>(
    work: impl AsyncFnOnce(&Handle) -> Result<T, NetError>,
) -> Result<T, NetError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetError::io("starting the netlink runtime", e))?;
    rt.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::io("opening a netlink socket", e))?;
        let driver = tokio::spawn(connection);
        let out = work(&handle).await;
        driver.abort();
        out
    })
}

/// The link called `name`, if there is one.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, NetError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) => {
            let e = NetError::netlink(format!("looking up link {name}"), e);
            if e.is_no_device() {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Every link in the namespace.
pub async fn all_links(h: &Handle) -> Result<Vec<LinkMessage>, NetError> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| NetError::netlink("listing links", e))
}

pub fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub fn link_mac(link: &LinkMessage) -> Option<Mac> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => Mac::from_slice(bytes),
        _ => None,
    })
}

pub fn is_veth(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}
