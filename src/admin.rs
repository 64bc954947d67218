//! Admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/report`.
//!
//! A deliberately small HTTP/1.1 responder (GET only, one request per connection, bounded
//! request size and time): probes and a Prometheus scrape are all it serves, and it keeps the
//! binary free of a web framework.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::AdminReport;

/// What the admin listener serves; implemented by the proxy.
pub trait AdminSource: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn ready(&self) -> Result<(), String>;
    /// The amplification report as JSON, over `window` when given.
    fn report(&self, window: Option<Duration>) -> Option<String>;
    /// Who may read `/report` (`admin_report`); read per request, so a reload applies.
    fn report_access(&self) -> AdminReport {
        AdminReport::Local
    }
}

const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, source: Arc<dyn AdminSource>) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let text = String::from_utf8_lossy(&buf);
            let mut parts = text.lines().next().unwrap_or("").split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) = route(method, target, peer.ip(), &*source);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            if method != "HEAD" {
                let _ = stream.write_all(body.as_bytes()).await;
            }
            let _ = stream.shutdown().await;
        });
    }
}

fn route(
    method: &str,
    target: &str,
    peer: IpAddr,
    source: &dyn AdminSource,
) -> (&'static str, &'static str, String) {
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "text/plain", "only GET\n".into());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", source.metrics()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => match source.ready() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".into()),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        // Client addresses and the names they look up: not for every pod on the node network.
        "/report" if source.report_access() == AdminReport::Off => (
            "404 Not Found",
            "text/plain",
            "/report is off (admin_report: off)\n".into(),
        ),
        "/report" if source.report_access() == AdminReport::Local && !is_loopback(peer) => (
            "403 Forbidden",
            "text/plain",
            "/report is served to loopback clients only (admin_report: local); use \
             `kubectl port-forward` or set admin_report: public\n"
                .into(),
        ),
        "/report" => {
            let window = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("window="))
                .map(crate::config::parse_duration);
            match window {
                Some(Err(e)) => ("400 Bad Request", "text/plain", format!("{e}\n")),
                Some(Ok(w)) => report(source, Some(w)),
                None => report(source, None),
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics, /report, /healthz, /readyz\n".into(),
        ),
    }
}

/// Loopback, also as an IPv4-mapped address on a dual-stack socket.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

fn report(
    source: &dyn AdminSource,
    window: Option<Duration>,
) -> (&'static str, &'static str, String) {
    match source.report(window) {
        Some(json) => ("200 OK", "application/json", json),
        None => (
            "503 Service Unavailable",
            "text/plain",
            "the amplification tracker is not running\n".into(),
        ),
    }
}
