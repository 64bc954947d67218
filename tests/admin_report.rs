//! `admin_report` (issue 17, DESIGN §9 "Admin"): `/report` lists pod addresses and the names
//! they look up, and the node-local admin port listens on every address of the node's network.
//! In a private network namespace (a non-loopback address of its own, 192.0.2.1): by default
//! `/report` answers a loopback client and refuses 192.0.2.1 with 403, while `/metrics`,
//! `/healthz` and `/readyz` answer both; a reload to `public` opens it, `off` closes it for
//! everyone.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use common::netns;
use common::tools::{free_port, http_get};
use common::upstream::Upstream;

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status of GET `path`, polled (bounded) until the listener answers at all.
fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    (0..50).find_map(|_| {
        http_get(addr, path).map(|(c, _)| c).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    })
}

/// Poll (bounded) until GET `path` from `addr` returns `want` (a reload is asynchronous).
fn becomes(addr: SocketAddr, path: &str, want: u16) -> bool {
    (0..100).any(|_| {
        let ok = status(addr, path) == Some(want);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    })
}

#[test]
fn report_is_for_loopback_clients_by_default_and_metrics_for_everyone() {
    let Some(ns) =
        netns::enter("report_is_for_loopback_clients_by_default_and_metrics_for_everyone")
    else {
        return;
    };
    let up = Upstream::start();
    let port = free_port();
    let config = ns.scratch().join("proxy.yaml");
    let write = |report: Option<&str>| {
        let line = report
            .map(|r| format!("admin_report: {r}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "listen: [\"127.0.0.1:0\"]\nadmin: \"0.0.0.0:{port}\"\n{line}\
                 upstreams: [{{zone: ., servers: [\"{}\"]}}]\nserver: {{workers: 1}}\n",
                up.addr
            ),
        )
        .unwrap();
    };
    write(None);
    let mut proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--config"])
            .arg(&config)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Connecting to the namespace's own 192.0.2.1 makes that the client's address: not
    // loopback, as a pod on the node network would be.
    let remote: SocketAddr = format!("192.0.2.1:{port}").parse().unwrap();

    assert_eq!(status(local, "/report"), Some(200), "a loopback client");
    assert_eq!(
        status(remote, "/report"),
        Some(403),
        "a client from the node network, by default"
    );
    let (_, body) = http_get(remote, "/report").unwrap();
    assert!(
        body.contains("admin_report"),
        "the refusal says how: {body}"
    );
    for path in ["/metrics", "/healthz"] {
        assert_eq!(status(remote, path), Some(200), "{path} for everyone");
    }
    assert!(
        matches!(status(remote, "/readyz"), Some(200 | 503)),
        "/readyz is not gated"
    );

    // A reload applies to the next request.
    write(Some("public"));
    unsafe { libc::kill(proxy.0.id() as i32, libc::SIGHUP) };
    assert!(becomes(remote, "/report", 200), "admin_report: public");
    write(Some("off"));
    unsafe { libc::kill(proxy.0.id() as i32, libc::SIGHUP) };
    assert!(
        becomes(local, "/report", 404),
        "admin_report: off, even locally"
    );
    assert_eq!(status(remote, "/metrics"), Some(200));
    let _ = proxy.0.kill();
    let _ = proxy.0.wait();
}
