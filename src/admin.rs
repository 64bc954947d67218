//! Admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/report`.
//!
//! A deliberately small HTTP/1.1 responder (GET only, one request per connection, bounded
//! request size, read and write time, and connections at once; accept errors back off): probes
//! and a Prometheus scrape are all it serves, and it keeps the binary free of a web framework.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::AdminReport;

/// What the admin listener serves; implemented by the proxy.
pub trait AdminSource: Send + Sync + 'static {
    fn metrics(&self) -> String;
    fn ready(&self) -> Result<(), String>;
    /// The amplification report as JSON, over `window` when given.
    fn report(&self, window: Option<Duration>) -> Option<String>;
    /// This process's instance id, sent with every response as `X-Ndots-Instance` (so a
    /// client of a shared admin port can tell which process answered).
    fn instance(&self) -> &str {
        ""
    }
    /// A newer process on the same admin address asks this one to hand over and drain
    /// (`POST /handover`, proxy::peers). `Err` says why not.
    fn handover(&self, _from: &str) -> Result<(), String> {
        Err("hand-over is not supported here".into())
    }

    /// Who may read `/report` (`admin_report`); read per request, so a reload applies.
    fn report_access(&self) -> AdminReport {
        AdminReport::Local
    }
}

const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request, and separately to take the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; beyond this a new one is closed at once (counted). Probes and
/// scrapes need a handful; the cap keeps a flood of idle connections from costing memory and
/// tasks, and the request timeout frees held slots within 5 s.
pub const MAX_CONNECTIONS: usize = 64;
/// Back-off after a failed accept (EMFILE, ENFILE, ENOBUFS): doubling from MIN to MAX, so a
/// process out of file descriptors does not spin a core retrying.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serve until `stopped` changes; then the listener closes (it leaves the SO_REUSEPORT
/// group, so a process sharing the address gets every new connection).
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                (stream, peer)
            }
            Err(e) => {
                if backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!("admin listener: accept failed, backing off: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::OVERLOAD_DROPS, "limit" => "admin_connections")
                .increment(1);
            continue; // dropping the stream closes it
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
            let (status, ctype, body) = if method == "POST" && target == "/handover" {
                // Only a process on this host may ask: the peer is loopback or our own address.
                let local = stream.local_addr().ok().map(|a| a.ip());
                if peer.ip().is_loopback() || Some(peer.ip()) == local {
                    let from = header_value(&text, "x-ndots-instance").unwrap_or_default();
                    match source.handover(&from) {
                        Ok(()) => ("200 OK", "text/plain", "draining\n".to_string()),
                        Err(why) => ("409 Conflict", "text/plain", format!("{why}\n")),
                    }
                } else {
                    (
                        "403 Forbidden",
                        "text/plain",
                        "hand-over only from this host\n".into(),
                    )
                }
            } else {
                // A report waits for the tracker to publish what it holds and is then built
                // and serialised: off the runtime's workers, which also serve DNS over TCP and
                // the queries that missed the cache.
                let (m, t, src) = (method.to_string(), target.to_string(), source.clone());
                let ip = peer.ip();
                match tokio::task::spawn_blocking(move || route(&m, &t, ip, &*src)).await {
                    Ok(answer) => answer,
                    Err(_) => (
                        "500 Internal Server Error",
                        "text/plain",
                        "the request failed\n".into(),
                    ),
                }
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Ndots-Instance: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                source.instance()
            );
            // A client that does not read its response loses its connection, not our task.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                stream.write_all(head.as_bytes()).await?;
                if method != "HEAD" {
                    stream.write_all(body.as_bytes()).await?;
                }
                stream.shutdown().await
            })
            .await;
        });
    }
}

/// A request header's value (name compared case-insensitively).
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
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
