//! The fleet report (issue 18, DESIGN §9 "Fleet"): a real Prometheus scrapes two proxies (two
//! processes, each with its own registry), pods of a different namespace walk through each, and
//! `ndots report --prometheus` equals the sum of the two `/report`s on every figure metrics carry.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus;
use common::tools::{free_port, http_get, require, Proc};
use common::upstream::{Rec, Upstream};

fn ndots() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ndots"))
}

/// Walks as glibc sends them from a pod in `ns`; stops at the first NOERROR.
fn walks(dns: SocketAddr, ns: &str, bases: &[&str]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for (i, base) in bases.iter().enumerate() {
        for qtype in [1u16, 28] {
            for suffix in [
                format!("{ns}.svc.cluster.local."),
                "svc.cluster.local.".into(),
                "cluster.local.".into(),
                String::new(),
            ] {
                let name = if suffix.is_empty() {
                    format!("{base}.")
                } else {
                    format!("{base}.{suffix}")
                };
                let mut q = Vec::new();
                ndots::wire::build_query(i as u16, &name, qtype, false, &mut q).unwrap();
                s.send_to(&q, dns).unwrap();
                let mut b = [0u8; 1500];
                let n = s.recv(&mut b).expect("answer");
                if ndots::wire::parse_response(&b[..n]).unwrap().rcode == 0 {
                    break;
                }
            }
        }
    }
}

#[test]
fn prometheus_fleet_report_equals_the_sum_of_the_proxies_reports() {
    if !require("prometheus") {
        return;
    }
    let up = Upstream::start();
    up.add(
        "api.example.com.",
        1,
        Rec::A("192.0.2.10".parse().unwrap(), 60),
    );
    up.add(
        "web.team-a.svc.cluster.local.",
        1,
        Rec::A("10.96.0.7".parse().unwrap(), 30),
    );
    up.add(
        "db.svc.cluster.local.",
        1,
        Rec::A("10.96.0.8".parse().unwrap(), 30),
    );
    let mut proxies = Vec::new();
    let mut admins = Vec::new();
    let mut dns = Vec::new();
    for _ in 0..2 {
        let (port, admin) = (free_port(), free_port());
        proxies.push(Proc(
            ndots()
                .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin", &format!("127.0.0.1:{admin}")])
                .args(["--upstream", &up.addr.to_string(), "--shortcut-mode", "off"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        admins.push(format!("127.0.0.1:{admin}").parse::<SocketAddr>().unwrap());
        dns.push(format!("127.0.0.1:{port}").parse::<SocketAddr>().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for a in &admins {
        while http_get(*a, "/healthz").is_none() {
            assert!(Instant::now() < deadline, "proxy at {a} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let targets = admins
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (_prom, prom) = prometheus::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: ndots\n    static_configs:\n      - targets: [{targets}]\n"
        ),
    );

    walks(dns[0], "team-a", &["web", "api.example.com", "nothing"]);
    walks(
        dns[1],
        "team-b",
        &["db", "api.example.com", "web", "api.example.com"],
    );
    // A walk left at NODATA (this client stops there, the tracker waits for more) ends after
    // the idle window (2 s).
    std::thread::sleep(Duration::from_millis(3000));
    let reports: Vec<serde_json::Value> = admins
        .iter()
        .map(|a| serde_json::from_str(&http_get(*a, "/report").unwrap().1).unwrap())
        .collect();
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| reports.iter().map(f).sum::<u64>();
    let lookups = sum(&|r| r["lookups"].as_u64().unwrap());
    assert_eq!(lookups, 14, "6 + 8 walks: {reports:?}");

    let url = format!("http://{prom}");
    let fleet = |extra: &[&str]| -> serde_json::Value {
        common::tools::run_json(
            ndots()
                .args(["report", "--prometheus", &url, "--format", "json"])
                .args(extra),
        )
    };
    // Wait for a scrape of both proxies after the traffic.
    let deadline = Instant::now() + Duration::from_secs(30);
    let f = loop {
        let f = fleet(&["--selector", "job=\"ndots\""]);
        if f["lookups"].as_u64() == Some(lookups) {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had {lookups} lookups: {f}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("fleet report: {f}");
    for k in ["queries", "wasted_queries"] {
        assert_eq!(
            f[k].as_u64().unwrap(),
            sum(&|r| r[k].as_u64().unwrap()),
            "{k}"
        );
    }
    for section in ["by_suffix", "wasted_by_suffix", "by_type", "outcomes"] {
        let mut expected = serde_json::Map::new();
        for r in &reports {
            for (k, v) in r[section].as_object().unwrap() {
                let e = expected.entry(k.clone()).or_insert(serde_json::json!(null));
                *e = match (e.take(), v) {
                    (serde_json::Value::Null, v) => v.clone(),
                    (serde_json::Value::Number(a), serde_json::Value::Number(b)) => {
                        (a.as_u64().unwrap() + b.as_u64().unwrap()).into()
                    }
                    (mut a, b) => {
                        for (k2, v2) in b.as_object().unwrap() {
                            let n = a[k2].as_u64().unwrap() + v2.as_u64().unwrap();
                            a[k2] = n.into();
                        }
                        a
                    }
                };
            }
        }
        assert_eq!(f[section], serde_json::Value::Object(expected), "{section}");
    }
    // Walks here are at most 4 queries long: the buckets are exact.
    let mut hist = std::collections::BTreeMap::<u64, u64>::new();
    for r in &reports {
        for row in r["amplification"]["histogram"].as_array().unwrap() {
            *hist.entry(row[0].as_u64().unwrap()).or_default() += row[1].as_u64().unwrap();
        }
    }
    let rows: Vec<[u64; 2]> = hist.into_iter().map(|(k, v)| [k, v]).collect();
    assert_eq!(f["amplification"]["histogram"], serde_json::json!(rows));
    // Per namespace: each proxy's pods are of one namespace.
    let ns = f["namespaces"].as_array().unwrap();
    for (r, name) in reports.iter().zip(["team-a", "team-b"]) {
        let row = ns
            .iter()
            .find(|n| n["namespace"] == name)
            .unwrap_or_else(|| panic!("{name} in {ns:?}"));
        assert_eq!(row["lookups"], r["lookups"], "{name}");
        assert_eq!(row["queries"], r["queries"], "{name}");
        assert_eq!(row["wasted_queries"], r["wasted_queries"], "{name}");
    }
    // A selector that matches nothing gives an empty report, not an error.
    let none = fleet(&["--selector", "job=\"nothing\""]);
    assert_eq!(none["lookups"], 0);
    // A window: the same traffic again. increase() counts what happened within the window;
    // a series only exists from its first increment, so the first batch is not an increase,
    // and Prometheus extrapolates a little at the edges: the second batch, give or take.
    walks(dns[0], "team-a", &["web", "api.example.com", "nothing"]);
    walks(
        dns[1],
        "team-b",
        &["db", "api.example.com", "web", "api.example.com"],
    );
    std::thread::sleep(Duration::from_millis(3000));
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet(&[])["lookups"].as_u64() != Some(2 * lookups) {
        assert!(
            Instant::now() < deadline,
            "the second batch never reached Prometheus"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let w = fleet(&["--window", "5m"]);
    eprintln!(
        "window 5m: {} lookups (second batch {lookups})",
        w["lookups"]
    );
    let wl = w["lookups"].as_u64().unwrap();
    assert!(wl >= lookups && wl < 2 * lookups, "{w}");
    assert_eq!(w["window_seconds"], 300.0);
}
