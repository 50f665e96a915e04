//! The sandbox client: connects or sends to an address the way an application
//! would, and prints one JSON line per attempt saying which backend answered,
//! what getpeername()/recvfrom() reported, or which errno came back.
//!
//!   lash-probe [--cgroup DIR] [--netns NAME] MODE ADDR:PORT [--count N] [--size BYTES]
//!   MODE: tcp | udp (one unconnected socket, sendto/recvfrom) |
//!         udp-connected | hold (one TCP connection, a request per stdin line)
//!   --size: the UDP modes send datagrams of this many bytes (default 4,
//!   "ping"), the way a test sends a payload close to the path's MTU.
//!
//! Bench modes (one JSON line each):
//!   bench-connect ADDR --count N        connect()+close N times: latency percentiles
//!   bench-rr ADDR --millis M            requests over one connection for M ms
//!   wait-backend ADDR --backends a,b [--millis LIMIT]
//!                                       after a "go" line on stdin, connect until
//!                                       one of the backends answers: the time a
//!                                       change took to reach the datapath
//!
//! Socket-state modes (ADDR is an IPv4 address:port; the *6 modes use AF_INET6
//! sockets and reach it as the v4-mapped ::ffff:ADDR, as Java clients do):
//!   tcp6 | udp6 | udp6-connected ADDR [--count N]
//!                                       as tcp, udp and udp-connected
//!   udp-hold ADDR --count N             N unconnected UDP sockets kept open: one
//!                                       datagram on each at start and per stdin
//!                                       line, one JSON line per round
//!   tcp-churn ADDR --count N            connect()+close() N times as fast as it
//!                                       goes: one JSON line with the outcomes

use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What every UDP mode sends: "ping", padded to --size if given. Set once,
/// before any datagram goes out.
static PAYLOAD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

fn payload() -> &'static [u8] {
    PAYLOAD.get_or_init(|| b"ping".to_vec())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut positional = Vec::new();
    let mut count = 1usize;
    let mut millis = 1000u64;
    let mut wanted: Vec<String> = Vec::new();
    let mut cpu: Option<usize> = None;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            // cgroup first: entering the netns does not change cgroup membership.
            "--cgroup" => lash_tests::netns::join_cgroup(v.as_ref())?,
            "--netns" => lash_tests::netns::enter(&v)?,
            "--count" => count = v.parse()?,
            "--millis" => millis = v.parse()?,
            "--backends" => wanted = v.split(',').map(str::to_string).collect(),
            "--cpu" => cpu = Some(v.parse()?),
            "--size" => {
                let mut p = b"ping".to_vec();
                p.resize(v.parse::<usize>()?.max(p.len()), b'.');
                let _ = PAYLOAD.set(p);
            }
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
    if let Some(cpu) = cpu {
        lash_tests::netns::pin_to_cpu(cpu)?;
    }
    match mode.as_str() {
        "bench-connect" => println!("{}", bench_connect(addr, count)),
        "bench-rr" => println!("{}", bench_rr(addr, Duration::from_millis(millis))?),
        "wait-backend" => println!(
            "{}",
            wait_backend(addr, &wanted, Duration::from_millis(millis))?
        ),
        "tcp" => (0..count).for_each(|_| println!("{}", tcp_once(addr))),
        "udp" => udp_unconnected(addr, count)?,
        "udp-connected" => {
            (0..count).for_each(|_| println!("{}", udp_connected("0.0.0.0:0", addr)))
        }
        "hold" => hold(addr)?,
        "tcp6" => (0..count).for_each(|_| println!("{}", tcp_once(v4_mapped(addr)))),
        "udp6" => udp6_unconnected(v4_mapped(addr), count)?,
        "udp6-connected" => {
            (0..count).for_each(|_| println!("{}", udp_connected("[::]:0", v4_mapped(addr))))
        }
        "udp-hold" => udp_hold(addr, count)?,
        "tcp-churn" => println!("{}", tcp_churn(addr, count)),
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
        Ok(backend) => {
            json!({"ok": true, "backend": backend, "peer": peer, "connect_us": connect_us})
        }
        Err(e) => errno_json(&e, start.elapsed()),
    }
}

/// A fresh socket bound to `local` (an IPv4 or IPv6 wildcard: the family of
/// the socket) and connected to `addr`: one datagram and its reply.
fn udp_connected(local: &str, addr: SocketAddr) -> serde_json::Value {
    let start = Instant::now();
    let run = || -> std::io::Result<serde_json::Value> {
        let s = UdpSocket::bind(local)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.connect(addr)?;
        let peer = s.peer_addr()?.to_string();
        s.send(payload())?;
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
        println!("{}", udp_round_trip(&s, addr));
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

/// Latency of connect() (handshake included) to `addr`, `count` times after a
/// short warm-up. Connections are closed with RST (linger 0) so thousands of
/// them leave no TIME_WAIT behind to skew later runs.
fn bench_connect(addr: SocketAddr, count: usize) -> serde_json::Value {
    let warmup = (count / 20).clamp(5, 100);
    let mut samples = Vec::with_capacity(count);
    let mut errors = 0usize;
    let mut first_error = String::new();
    for i in 0..warmup + count {
        let start = Instant::now();
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                let took = start.elapsed();
                let _ = socket_linger_zero(&s);
                drop(s);
                if i >= warmup {
                    samples.push(took.as_nanos() as u64);
                }
            }
            Err(e) => {
                errors += 1;
                if first_error.is_empty() {
                    first_error = e.to_string();
                }
            }
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[idx] as f64 / 1000.0
    };
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1000.0
    };
    json!({"n": samples.len(), "errors": errors, "first_error": first_error,
           "p50_us": pct(0.50), "p99_us": pct(0.99), "mean_us": mean})
}

fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Request/response round trips over one established connection.
fn bench_rr(addr: SocketAddr, duration: Duration) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_nodelay(true)?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        request(&mut s)?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({"requests": n, "rate_per_s": n as f64 / secs}))
}

/// Waits for "go" on stdin, then connects until one of `wanted` answers.
fn wait_backend(
    addr: SocketAddr,
    wanted: &[String],
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let start = Instant::now();
    let mut attempts = 0u64;
    while start.elapsed() < limit {
        attempts += 1;
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, TIMEOUT) {
            let _ = s.set_read_timeout(Some(TIMEOUT));
            if let Ok(b) = request(&mut s) {
                let _ = socket_linger_zero(&s);
                if wanted.iter().any(|w| *w == b) {
                    return Ok(
                        json!({"ok": true, "elapsed_us": start.elapsed().as_micros() as u64, "attempts": attempts}),
                    );
                }
            }
        }
    }
    Ok(json!({"ok": false, "elapsed_us": start.elapsed().as_micros() as u64, "attempts": attempts}))
}

/// `a.b.c.d:port` as `[::ffff:a.b.c.d]:port`, so std opens an AF_INET6 socket.
fn v4_mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
        v6 => v6,
    }
}

/// One AF_INET6 socket (dual-stack), `count` datagrams to a v4-mapped address.
fn udp6_unconnected(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let s = UdpSocket::bind("[::]:0")?;
    s.set_read_timeout(Some(TIMEOUT))?;
    for _ in 0..count {
        println!("{}", udp_round_trip(&s, addr));
    }
    Ok(())
}

/// One sendto()/recvfrom() on an unconnected socket: who answered, and the
/// source address the application was shown.
fn udp_round_trip(s: &UdpSocket, addr: SocketAddr) -> serde_json::Value {
    let start = Instant::now();
    let r = (|| -> std::io::Result<serde_json::Value> {
        s.send_to(payload(), addr)?;
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf)?;
        Ok(
            json!({"ok": true, "backend": String::from_utf8_lossy(&buf[..n]), "from": from.to_string()}),
        )
    })();
    r.unwrap_or_else(|e| errno_json(&e, start.elapsed()))
}

/// `count` unconnected UDP sockets that live until stdin closes: a round (one
/// datagram per socket, in order) at start and per stdin line, printed as
/// `{"sockets": [...]}`. Shows whether each socket keeps its backend and its
/// reverse view while the test changes the world around it.
fn udp_hold(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let socks = (0..count)
        .map(|_| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(TIMEOUT))?;
            Ok(s)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let round = || {
        let r: Vec<_> = socks.iter().map(|s| udp_round_trip(s, addr)).collect();
        println!("{}", json!({ "sockets": r }));
        std::io::stdout().flush()
    };
    round()?;
    for line in std::io::stdin().lock().lines() {
        line?;
        round()?;
    }
    Ok(())
}

/// `count` TCP connects, each closed at once with RST (no TIME_WAIT left
/// behind). Refused connects count as done: the connect went through the
/// socket programs all the same.
fn tcp_churn(addr: SocketAddr, count: usize) -> serde_json::Value {
    let start = Instant::now();
    let (mut connected, mut refused, mut other) = (0u64, 0u64, 0u64);
    let mut first_other = String::new();
    for _ in 0..count {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                connected += 1;
                let _ = socket_linger_zero(&s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => {
                other += 1;
                if first_other.is_empty() {
                    first_other = e.to_string();
                }
            }
        }
    }
    json!({"n": count, "connected": connected, "refused": refused, "other_errors": other,
           "first_other_error": first_other, "elapsed_ms": start.elapsed().as_millis() as u64})
}
