//! A plain HTTP/1.1 GET from inside a test's network namespace, for the
//! agent's `/healthz` and `/metrics` (which listen on the namespace's
//! loopback): the status code and the body.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::fd::AsRawFd,
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context as _};

/// GETs `path` from `addr` (e.g. "127.0.0.1:10256") inside netns `ns`.
pub fn get_in(ns: &str, addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    request_in(ns, addr, "GET", path)
}

/// A request without a body (`GET`, `POST`) inside netns `ns`.
pub fn request_in(ns: &str, addr: &str, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let (ns, addr, path, method) = (
        ns.to_string(),
        addr.to_string(),
        path.to_string(),
        method.to_string(),
    );
    // A thread of its own: setns moves only the calling thread.
    std::thread::spawn(move || -> anyhow::Result<(u16, String)> {
        let f = File::open(Path::new("/var/run/netns").join(&ns))
            .with_context(|| format!("opening netns {ns}"))?;
        // SAFETY: a valid namespace fd; only this thread moves.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("setns {ns}"));
        }
        let mut s = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let Some((head, body)) = resp.split_once("\r\n\r\n") else {
            bail!("no end of headers in {resp:?}");
        };
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        Ok((code, body.to_string()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?
}
