//! One netlink connection per batch of work (rtnetlink), the errors of the
//! node's network setup, and the lookups every part of it needs.

use futures::TryStreamExt;
use rtnetlink::Handle;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeNetError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

pub(crate) fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NodeNetError {
    let what = what.into();
    move |source| NodeNetError::Netlink { what, source }
}

pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

pub(crate) fn connect() -> Result<Handle, NodeNetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NodeNetError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NodeNetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("looking up {name}"))(e)),
    }
}
