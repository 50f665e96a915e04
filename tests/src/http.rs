//! Plain HTTP/1.1 from inside a test's network namespace: a GET for the
//! agent's `/healthz` and `/metrics` (which listen on the namespace's
//! loopback), and a kept-alive connection with bodies for the stand-in API
//! server (the bench's writes, timed without a client process to start).

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
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
    let mut s = connect_in(ns, addr)?;
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
}

/// A TCP connection to `addr` made inside netns `ns`. A socket stays in the
/// namespace it was made in, so any thread can use it afterwards.
pub fn connect_in(ns: &str, addr: &str) -> anyhow::Result<TcpStream> {
    let (ns, addr) = (ns.to_string(), addr.to_string());
    // A thread of its own: setns moves only the calling thread.
    std::thread::spawn(move || -> anyhow::Result<TcpStream> {
        let f = File::open(Path::new("/var/run/netns").join(&ns))
            .with_context(|| format!("opening netns {ns}"))?;
        // SAFETY: a valid namespace fd; only this thread moves.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("setns {ns}"));
        }
        let s = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_nodelay(true)?;
        Ok(s)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?
}

/// One kept-alive HTTP/1.1 connection: requests with bodies, one at a time.
pub struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub fn open_in(ns: &str, addr: &str) -> anyhow::Result<Self> {
        Ok(Conn {
            reader: BufReader::new(connect_in(ns, addr)?),
            host: addr.to_string(),
        })
    }

    /// Sends one request and reads its whole answer (by Content-Length or
    /// chunks): the status code and the body.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let status = self.line()?;
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status in {status:?}"))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                let size = usize::from_str_radix(self.line()?.split(';').next().unwrap_or(""), 16)?;
                let mut chunk = vec![0; size + 2]; // and its CRLF
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.context("an answer without Content-Length or chunks")?;
            out.resize(length, 0);
            self.reader.read_exact(&mut out)?;
        }
        Ok((code, out))
    }

    /// One header line, without its CRLF.
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the server closed the connection");
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}
