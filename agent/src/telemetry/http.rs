//! Two tiny HTTP/1.1 listeners: `/healthz` (kube-proxy's port, 10256) and
//! `/metrics` (Prometheus text). One request per connection, answered and
//! closed: the callers are the kubelet's probes and a scraper, not browsers.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, info};

use super::Telemetry;

#[derive(Debug, Error)]
#[error("listening on {addr} for {what}: {source}")]
pub struct ListenError {
    addr: SocketAddr,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

/// A request's head may not be larger than this; the body is never read.
const MAX_HEAD: usize = 8192;

/// Which listener a connection came to.
#[derive(Clone)]
enum Serves {
    Health(Arc<Telemetry>),
    Metrics(Arc<Telemetry>),
}

pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ListenError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, what, source })?;
    info!(%addr, "serving {what}");
    Ok(l)
}

pub async fn serve_health(listener: TcpListener, t: Arc<Telemetry>) {
    serve(listener, Serves::Health(t)).await
}

pub async fn serve_metrics(listener: TcpListener, t: Arc<Telemetry>) {
    serve(listener, Serves::Metrics(t)).await
}

async fn serve(listener: TcpListener, serves: Serves) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let serves = serves.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(conn, serves).await {
                debug!("http: {e}");
            }
        });
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The response to `path` from this listener: status line, content type, body.
fn respond(serves: &Serves, path: &str) -> (&'static str, &'static str, String) {
    match (serves, path) {
        (Serves::Health(t), "/healthz" | "/livez") => {
            let now = SystemTime::now();
            let v = t.health.verdict(now);
            // The fields kube-proxy's healthz answers with.
            let body = serde_json::json!({
                "lastUpdated": v.last_updated.map(rfc3339).unwrap_or_default(),
                "currentTime": rfc3339(now),
                "nodeEligible": true,
            })
            .to_string();
            let status = if v.healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        (Serves::Metrics(t), "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            t.metrics.scrape(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

async fn answer(mut conn: TcpStream, serves: Serves) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method == "GET" || method == "HEAD" {
        let serves2 = serves.clone();
        let path = path.to_string();
        // A scrape reads pinned maps: off the async workers.
        tokio::task::spawn_blocking(move || respond(&serves2, &path))
            .await
            .map_err(std::io::Error::other)?
    } else {
        ("405 Method Not Allowed", "text/plain", "GET only\n".into())
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&out).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_083_200 + 3_723);
        assert_eq!(rfc3339(t), "2026-12-01T01:02:03Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
