//! `ndots report` through the binary: merging saved reports, fetching from admin listeners
//! over HTTP, formats and exit codes; and the report of a real glibc client's walks.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndots::amplify::{Analyzer, Report};
use ndots::config::{ClusterConfig, TrackerConfig};
use ndots::event::{AnswerSource, QueryEvent, Timestamp};

fn cluster() -> ClusterConfig {
    ClusterConfig {
        node_search: vec!["ec2.internal".into()],
        ..ClusterConfig::kubernetes("cluster.local")
    }
}

/// glibc walks for `names` from `clients` in namespace `ns`, starting at `t0_ms`; the last
/// candidate of each walk answers.
fn events(clients: &[&str], ns: &str, names: &[&str], t0_ms: u64) -> Vec<QueryEvent> {
    let mut v = Vec::new();
    let mut t = 1_700_000_000_000_000 + t0_ms * 1000;
    for c in clients {
        for name in names {
            let candidates = [
                format!("{name}.{ns}.svc.cluster.local."),
                format!("{name}.svc.cluster.local."),
                format!("{name}.cluster.local."),
                format!("{name}.ec2.internal."),
                format!("{name}."),
            ];
            for (i, q) in candidates.iter().enumerate() {
                let last = i == candidates.len() - 1;
                for qtype in [1u16, 28] {
                    t += 1000;
                    v.push(QueryEvent {
                        time: Timestamp(t),
                        client: c.parse().unwrap(),
                        client_port: None,
                        qname: q.clone(),
                        qtype,
                        rcode: Some(if last { 0 } else { 3 }),
                        answers: Some(last as u16),
                        latency: Some(Duration::from_micros(400)),
                        source: Some(AnswerSource::Upstream),
                    });
                }
            }
        }
        t += 5_000_000;
    }
    v
}

fn analyze(events: &[QueryEvent], source: &str) -> Report {
    let mut a = Analyzer::new(
        &cluster(),
        &TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 10_000,
            namespace_series: ndots::config::DEFAULT_NAMESPACE_SERIES,
        },
    );
    for e in events {
        a.observe(e);
    }
    a.finish(source)
}

fn ndots(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ndots"))
        .arg("report")
        .args(args)
        .output()
        .expect("running ndots")
}

/// Figures that do not depend on the split into reports.
fn timeless(mut r: Report) -> Report {
    r.source.clear();
    r.window_seconds = 0.0;
    r.first_seen = None;
    r.last_seen = None;
    r
}

fn two_nodes() -> (Vec<QueryEvent>, Vec<QueryEvent>) {
    let a = events(
        &["10.0.0.5", "10.0.0.6"],
        "shop",
        &["api.github.com", "s3.amazonaws.com"],
        0,
    );
    let b = events(
        &["10.0.1.7"],
        "batch",
        &["api.github.com", "pypi.org"],
        60_000,
    );
    (a, b)
}

#[test]
fn two_saved_reports_merge_into_the_report_of_all_their_traffic() {
    let (ea, eb) = two_nodes();
    let dir = tempfile::tempdir().unwrap();
    let pa = dir.path().join("a.json");
    let pb = dir.path().join("b.json");
    std::fs::write(&pa, serde_json::to_string(&analyze(&ea, "node-a")).unwrap()).unwrap();
    std::fs::write(&pb, serde_json::to_string(&analyze(&eb, "node-b")).unwrap()).unwrap();

    let out = ndots(&[
        "--input",
        pa.to_str().unwrap(),
        "--input",
        pb.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: Report = serde_json::from_slice(&out.stdout).unwrap();
    let all: Vec<QueryEvent> = ea.iter().chain(eb.iter()).cloned().collect();
    let whole = analyze(&all, "whole");
    assert_eq!(merged.source, "node-a + node-b");
    assert_eq!(timeless(merged.clone()), timeless(whole.clone()));
    // The merged top list re-ranks: api.github.com was seen on both nodes.
    let gh = merged
        .top_names
        .iter()
        .find(|n| n.name == "api.github.com.")
        .unwrap();
    assert_eq!(
        gh.lookups,
        whole
            .top_names
            .iter()
            .find(|n| n.name == gh.name)
            .unwrap()
            .lookups
    );
    assert_eq!(merged.top_names[0].name, "api.github.com.");

    // --output writes the same thing to a file.
    let po = dir.path().join("out.json");
    let out = ndots(&[
        "--input",
        pa.to_str().unwrap(),
        "--input",
        pb.to_str().unwrap(),
        "--format",
        "json",
        "--output",
        po.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let from_file: Report = serde_json::from_str(&std::fs::read_to_string(&po).unwrap()).unwrap();
    assert_eq!(from_file, merged);
}

/// Serve `body` on `/report` for `n` requests; record the request lines.
fn serve(body: String, n: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = s.read(&mut chunk).unwrap();
                if k == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..k]);
            }
            let req = String::from_utf8_lossy(&buf)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            seen2.lock().unwrap().push(req);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    (format!("http://{addr}"), seen)
}

#[test]
fn from_fetches_each_proxy_with_the_window_and_merges() {
    let (ea, eb) = two_nodes();
    let (ua, seen_a) = serve(serde_json::to_string(&analyze(&ea, "node-a")).unwrap(), 1);
    let (ub, seen_b) = serve(serde_json::to_string(&analyze(&eb, "node-b")).unwrap(), 1);
    let out = ndots(&[
        "--from", &ua, "--from", &ub, "--window", "5m", "--format", "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for seen in [seen_a, seen_b] {
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["GET /report?window=5m HTTP/1.1"]
        );
    }
    let merged: Report = serde_json::from_slice(&out.stdout).unwrap();
    let all: Vec<QueryEvent> = ea.iter().chain(eb.iter()).cloned().collect();
    assert_eq!(timeless(merged), timeless(analyze(&all, "")));
}

#[test]
fn text_and_html_formats_render_the_merge() {
    let (ea, _) = two_nodes();
    let r = analyze(&ea, "node-a");
    let (u, _) = serve(serde_json::to_string(&r).unwrap(), 2);
    let out = ndots(&["--from", &u]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("{} queries for {} lookups", r.queries, r.lookups)),
        "{text}"
    );
    assert!(text.contains("github.com"), "{text}");
    let out = ndots(&["--from", &u, "--format", "html"]);
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
}

#[test]
fn usage_errors_exit_2_and_runtime_failures_exit_1() {
    let out = ndots(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
    assert_eq!(
        ndots(&["--from", "http://127.0.0.1:1", "--window", "soon"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(ndots(&["--from", "ftp://x:1"]).status.code(), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = ndots(&["--input", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"not\": \"a report\"}").unwrap();
    let out = ndots(&["--input", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an ndots report"));

    // Nothing listens on a freshly closed port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = ndots(&["--from", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin listener"));
}

/// A real glibc `getaddrinfo` (through `getent ahosts`) in a pod-like namespace: the queries
/// the scripted server receives, turned into events in arrival order, give DESIGN's figures:
/// `api.github.com` with four search domains is 2 lookups, 10 queries, 8 wasted; `web.prod`,
/// found under `svc.cluster.local`, is 2 lookups, 4 queries, 2 wasted. Needs root (skipped
/// without, fails under CI=true).
#[test]
fn a_real_glibc_walk_gives_the_design_figures() {
    use common::scripted_dns::ScriptedDns;
    use ndots::search::name::absolute;
    use ndots::search::Answer;
    let Some(ns) = common::netns::enter("a_real_glibc_walk_gives_the_design_figures") else {
        return;
    };
    let server = ScriptedDns::start("127.0.0.1:53".parse().unwrap()).expect("binding :53");
    ns.set_resolv_conf(
        "nameserver 127.0.0.1\n\
         search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\n\
         options ndots:5 timeout:1 attempts:1\n",
    );
    let exists = [
        absolute("api.github.com"),
        absolute("web.prod.svc.cluster.local"),
    ];
    server.set_answers(exists.iter().map(|n| (n.clone(), None, Answer::Address)));
    let mut events = Vec::new();
    let mut t = 1_700_000_000_000_000u64;
    for name in ["api.github.com", "web.prod"] {
        server.take_log();
        let out = Command::new("getent")
            .args(["ahosts", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "getent ahosts {name} failed");
        for (qname, qtype) in server.take_log() {
            let found = exists.contains(&qname);
            t += 1000;
            events.push(QueryEvent {
                time: Timestamp(t),
                client: "10.0.0.5".parse().unwrap(),
                client_port: None,
                qname,
                qtype,
                rcode: Some(if found { 0 } else { 3 }),
                answers: Some(found as u16),
                latency: Some(Duration::from_micros(200)),
                source: Some(AnswerSource::Captured),
            });
        }
    }
    let r = analyze(&events, "glibc");
    let gh = r
        .top_names
        .iter()
        .find(|n| n.name == "api.github.com.")
        .unwrap();
    assert_eq!(
        (gh.lookups, gh.queries, gh.wasted_queries),
        (2, 10, 8),
        "{r:#?}"
    );
    let web = r.top_names.iter().find(|n| n.name == "web.prod.").unwrap();
    assert_eq!(
        (web.lookups, web.queries, web.wasted_queries),
        (2, 4, 2),
        "{r:#?}"
    );
    assert_eq!((r.lookups, r.queries, r.wasted_queries), (4, 14, 10));
    assert_eq!(r.by_type["A"].lookups, 2);
    assert_eq!(r.by_type["AAAA"].lookups, 2);
    assert_eq!(r.top_clients[0].namespace.as_deref(), Some("default"));
}

/// `ndots report --from URL --from URL` (the same proxy twice) doubled every count.
#[test]
fn the_same_source_given_twice_counts_once() {
    let (ea, _) = two_nodes();
    let dir = tempfile::tempdir().unwrap();
    let pa = dir.path().join("a.json");
    std::fs::write(&pa, serde_json::to_string(&analyze(&ea, "node-a")).unwrap()).unwrap();
    let p = pa.to_str().unwrap();
    let once = ndots(&["--input", p, "--format", "json"]);
    let twice = ndots(&["--input", p, "--input", p, "--format", "json"]);
    assert!(twice.status.success());
    let (once, twice): (Report, Report) = (
        serde_json::from_slice(&once.stdout).unwrap(),
        serde_json::from_slice(&twice.stdout).unwrap(),
    );
    assert_eq!(twice.queries, once.queries);
    assert_eq!(twice.lookups, once.lookups);
    // A URL given twice (one with a trailing slash) is fetched once.
    let body = serde_json::to_string(&analyze(&ea, "node-a")).unwrap();
    let (url, seen) = serve(body, 1);
    let out = ndots(&[
        "--from",
        &url,
        "--from",
        &format!("{url}/"),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Report = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.queries, once.queries);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
