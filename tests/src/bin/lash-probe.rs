//! The sandbox client: connects or sends to an address the way an application
//! would, and prints one JSON line per attempt saying which backend answered,
//! what getpeername()/recvfrom() reported, or which errno came back.
//!
//!   lash-probe [--cgroup DIR] [--netns NAME] MODE ADDR:PORT [--count N]
//!   MODE: tcp | udp (one unconnected socket, sendto/recvfrom) |
//!         udp-connected | hold (one TCP connection, a request per stdin line)

use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut positional = Vec::new();
    let mut count = 1usize;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            // cgroup first: entering the netns does not change cgroup membership.
            "--cgroup" => lash_tests::netns::join_cgroup(v.as_ref())?,
            "--netns" => lash_tests::netns::enter(&v)?,
            "--count" => count = v.parse()?,
            other => {
                positional.push(other.to_string());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let [mode, addr] = positional.as_slice() else {
        anyhow::bail!("usage: lash-probe [--cgroup DIR] [--netns NAME] MODE ADDR:PORT [--count N]");
    };
    let addr: SocketAddr = addr.parse()?;
    match mode.as_str() {
        "tcp" => (0..count).for_each(|_| println!("{}", tcp_once(addr))),
        "udp" => udp_unconnected(addr, count)?,
        "udp-connected" => (0..count).for_each(|_| println!("{}", udp_connected(addr))),
        "hold" => hold(addr)?,
        other => anyhow::bail!("unknown mode {other}"),
    }
    Ok(())
}

fn errno_json(e: &std::io::Error, elapsed: Duration) -> serde_json::Value {
    json!({
        "ok": false,
        "errno": e.raw_os_error().unwrap_or(0),
        "error": e.to_string(),
        "elapsed_us": elapsed.as_micros() as u64,
    })
}

/// Sends one request on `s` and returns the backend name from the response.
fn request(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: lash\r\n\r\n")?;
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            if body.ends_with('\n') {
                return Ok(body.trim().to_string());
            }
        }
    }
}

fn tcp_once(addr: SocketAddr) -> serde_json::Value {
    let start = Instant::now();
    let mut s = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(s) => s,
        Err(e) => return errno_json(&e, start.elapsed()),
    };
    let connect_us = start.elapsed().as_micros() as u64;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    match request(&mut s) {
        Ok(backend) => json!({"ok": true, "backend": backend, "peer": peer, "connect_us": connect_us}),
        Err(e) => errno_json(&e, start.elapsed()),
    }
}

fn udp_connected(addr: SocketAddr) -> serde_json::Value {
    let start = Instant::now();
    let run = || -> std::io::Result<serde_json::Value> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.connect(addr)?;
        let peer = s.peer_addr()?.to_string();
        s.send(b"ping")?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        Ok(json!({"ok": true, "backend": String::from_utf8_lossy(&buf[..n]), "peer": peer}))
    };
    run().unwrap_or_else(|e| errno_json(&e, start.elapsed()))
}

/// One socket, `count` datagrams: shows stickiness and the reply's source.
fn udp_unconnected(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(TIMEOUT))?;
    for _ in 0..count {
        let start = Instant::now();
        let r = (|| -> std::io::Result<serde_json::Value> {
            s.send_to(b"ping", addr)?;
            let mut buf = [0u8; 512];
            let (n, from) = s.recv_from(&mut buf)?;
            Ok(json!({"ok": true, "backend": String::from_utf8_lossy(&buf[..n]), "from": from.to_string()}))
        })();
        println!("{}", r.unwrap_or_else(|e| errno_json(&e, start.elapsed())));
    }
    Ok(())
}

/// One TCP connection kept open: a request at start and one per stdin line,
/// until stdin closes. Shows that a connection survives what happens meanwhile.
fn hold(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let peer = s.peer_addr()?.to_string();
    let first = request(&mut s)?;
    println!("{}", json!({"ok": true, "backend": first, "peer": peer}));
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        line?;
        let r = match request(&mut s) {
            Ok(b) => json!({"ok": true, "backend": b, "peer": peer}),
            Err(e) => errno_json(&e, Duration::ZERO),
        };
        println!("{r}");
        std::io::stdout().flush()?;
    }
    Ok(())
}
