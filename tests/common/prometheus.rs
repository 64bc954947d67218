//! A real Prometheus server for the tests that read the proxy's series through PromQL:
//! started on a free loopback port with the test's scrape configuration, and instant queries.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::{free_port, http_get, Proc};

/// `prometheus` with `config` (its prometheus.yml) and its TSDB in `dir`, once `/-/ready`
/// answers; killed when the returned process is dropped.
pub fn start(dir: &Path, config: &str) -> (Proc, SocketAddr) {
    let conf = dir.join("prometheus.yml");
    std::fs::write(&conf, config).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(addr, "/-/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    (p, addr)
}

/// `q` percent-encoded for a URL's query string.
pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The instant vector `expr` evaluates to, (labels, value) per series; `None` when Prometheus
/// does not answer 200 with a vector (not up yet, or the expression is not valid).
pub fn query(prom: SocketAddr, expr: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", encode(expr)))?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|s| {
            let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((s["metric"].clone(), value))
        })
        .collect()
}
