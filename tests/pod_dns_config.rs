//! Per-workload pod DNS config (`--pod-dns-config`) in `ndots replay` and `ndots analyze`:
//! two workloads with their own dnsConfig (one sets ndots:3, one appends KEP-4427's "." and
//! runs musl) and clients with the cluster's ndots:5. The capture is synthesized with the
//! library's stub models, each client walking with the resolv.conf its workload gives it; every
//! figure replay and the advice give per workload must be what `ndots simulate
//! --pod-dns-config FILE --workload NAME` says for that workload's lookups.

use std::collections::BTreeMap;
use std::process::Command;

use ndots::config::ClusterConfig;
use ndots::event::qtype_name;
use ndots::search::workloads::Workloads;
use ndots::search::{Answer, Family, ResolverSettings, Stub};

const WORKLOADS: &str = r#"workloads:
  - name: shop/web
    clients: [10.244.1.0/24]
    namespace: shop
    stub: glibc
    dnsConfig:
      options: [{name: ndots, value: "3"}]
  - name: batch/job
    clients: ["10.244.2.5"]
    namespace: batch
    stub: musl
    dnsConfig:
      searches: ["."]
"#;

const EXISTS: &[&str] = &[
    "api.github.com.",
    "web.shop.svc.cluster.local.",
    "web.batch.svc.cluster.local.",
    "web.default.svc.cluster.local.",
    "db.data.svc.cluster.local.",
];

/// Names each client asks, and how many times.
const ASKED: &[(&str, usize)] = &[("api.github.com", 3), ("web", 2), ("db.data", 1)];

/// `(client, workload)`: `None` runs the cluster's own resolv.conf (glibc, ndots:5).
const CLIENTS: &[(&str, Option<&str>)] = &[
    ("10.244.1.5", Some("shop/web")),
    ("10.244.1.6", Some("shop/web")),
    ("10.244.2.5", Some("batch/job")),
    ("10.244.9.5", None),
];

const DEFAULT_SEARCH: &str = "default.svc.cluster.local svc.cluster.local cluster.local";

fn ndots() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ndots"))
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = ndots().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ndots {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// `ndots simulate` of one name: the queries it sends.
fn simulate(extra: &[&str], name: &str, exists: &[&str]) -> u64 {
    let mut args = vec!["simulate", name, "--format", "json"];
    args.extend_from_slice(extra);
    for e in exists {
        args.push("--exists");
        args.push(e);
    }
    let v = run_json(&args);
    v["queries"].as_array().unwrap().len() as u64
}

fn cluster() -> ClusterConfig {
    ClusterConfig {
        domain: "cluster.local".into(),
        search: vec![],
        node_search: vec![],
    }
}

/// The JSON-lines capture: every client's lookups walked by its stub with its resolv.conf,
/// lookups 3 s apart (beyond the 2 s idle window), queries 1 ms apart.
fn synthesize(workloads: &Workloads) -> String {
    let mut out = String::new();
    let mut t = 1_732_240_000.0_f64;
    for (client, wl) in CLIENTS {
        let (stub, settings) = match wl {
            Some(name) => {
                let w = workloads.by_name(name).unwrap();
                let stub = w.stub.unwrap();
                (stub, w.settings(stub, None, &cluster(), None))
            }
            None => {
                let mut s = ResolverSettings::defaults(Stub::Glibc);
                s.set_ndots(5, Stub::Glibc);
                s.set_search(DEFAULT_SEARCH);
                (Stub::Glibc, s)
            }
        };
        for (name, times) in ASKED {
            for _ in 0..*times {
                let walk = stub.walk(name, Family::Unspec, &settings, |q, _| {
                    if EXISTS.contains(&q) {
                        Answer::Address
                    } else {
                        Answer::NxDomain
                    }
                });
                for (i, q) in walk.queries.iter().enumerate() {
                    let (rcode, answers) = match q.answer {
                        Answer::Address => ("NOERROR", 1),
                        _ => ("NXDOMAIN", 0),
                    };
                    out.push_str(&format!(
                        "{{\"ts\": {:.3}, \"client\": \"{client}\", \"qname\": \"{}\", \
                         \"qtype\": \"{}\", \"rcode\": \"{rcode}\", \"answers\": {answers}}}\n",
                        t + i as f64 * 0.001,
                        q.qname,
                        qtype_name(q.qtype),
                    ));
                }
                t += 3.0;
            }
        }
    }
    out
}

#[test]
fn each_workload_is_replayed_and_advised_with_its_own_dns_config_as_simulate_walks_it() {
    let dir = tempfile::tempdir().unwrap();
    let wl_path = dir.path().join("workloads.yaml");
    std::fs::write(&wl_path, WORKLOADS).unwrap();
    let wl = wl_path.to_str().unwrap();
    let workloads = Workloads::from_yaml(WORKLOADS).unwrap();
    let cap_path = dir.path().join("capture.jsonl");
    std::fs::write(&cap_path, synthesize(&workloads)).unwrap();
    let cap = cap_path.to_str().unwrap();
    let exists: Vec<&str> = EXISTS.iter().map(|e| e.trim_end_matches('.')).collect();

    // What simulate says a workload's lookups cost at `ndots` (None: its own).
    let expected = |workload: Option<&str>, ndots: Option<u32>| -> u64 {
        let n = ndots.map(|n| n.to_string());
        let mut extra: Vec<&str> = match workload {
            Some(w) => vec!["--pod-dns-config", wl, "--workload", w],
            None => vec!["--search", DEFAULT_SEARCH],
        };
        if let Some(n) = &n {
            extra.extend(["--ndots", n]);
        }
        let clients = CLIENTS.iter().filter(|c| c.1 == workload).count() as u64;
        ASKED
            .iter()
            .map(|(name, times)| *times as u64 * simulate(&extra, name, &exists))
            .sum::<u64>()
            * clients
    };

    // Replay: every setting's figures per workload.
    let r = run_json(&[
        "replay",
        cap,
        "--pod-dns-config",
        wl,
        "--ndots",
        "1,2,5",
        "--format",
        "json",
    ]);
    for s in r["settings"].as_array().unwrap() {
        let n = s["ndots"].as_u64().unwrap() as u32;
        let by: BTreeMap<&str, &serde_json::Value> = s["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["workload"].as_str().unwrap(), w))
            .collect();
        assert_eq!(by.len(), 2, "{s}");
        // shop/web sets ndots:3 in its dnsConfig: no cluster-wide setting changes it.
        let shop = by["shop/web"];
        assert_eq!(shop["ndots"], 3, "{shop}");
        assert_eq!(shop["stub"], "glibc");
        assert_eq!(
            shop["queries"],
            expected(Some("shop/web"), None),
            "ndots:{n} {shop}"
        );
        // batch/job takes the setting's ndots, with its own search list (root last) and musl.
        let batch = by["batch/job"];
        assert_eq!(batch["ndots"], n);
        assert_eq!(batch["stub"], "musl");
        assert_eq!(batch["search"].as_array().unwrap().last().unwrap(), ".");
        assert_eq!(
            batch["queries"],
            expected(Some("batch/job"), Some(n)),
            "ndots:{n} {batch}"
        );
        // The others: the cluster-wide setting.
        let rest = s["queries"].as_u64().unwrap()
            - shop["queries"].as_u64().unwrap()
            - batch["queries"].as_u64().unwrap();
        assert_eq!(rest, expected(None, Some(n)), "ndots:{n}");
    }

    // The text and HTML forms carry the same per-workload rows.
    for format in ["text", "html"] {
        let out = ndots()
            .args([
                "replay",
                cap,
                "--pod-dns-config",
                wl,
                "--ndots",
                "2",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let body = String::from_utf8(out.stdout).unwrap();
        for w in ["shop/web", "batch/job"] {
            assert!(body.contains(w), "{format}: {w} missing");
        }
    }

    // The advice: one item per workload from its own ndots, the cluster-wide one from the
    // clients no workload lists; every claim is simulate's walk.
    let a = run_json(&["analyze", cap, "--pod-dns-config", wl, "--format", "json"]);
    let items: Vec<&serde_json::Value> = a["advice"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "ndots")
        .collect();
    let of = |w: Option<&str>| -> Vec<&serde_json::Value> {
        items
            .iter()
            .copied()
            .filter(|i| i["scope"]["workload"].as_str() == w)
            .collect()
    };
    let shop = of(Some("shop/web"));
    assert_eq!(shop.len(), 1, "{items:?}");
    assert_eq!(
        shop[0]["current_ndots"], 3,
        "advised from its own ndots, not 5"
    );
    assert_eq!(shop[0]["ndots"], 2);
    let batch = of(Some("batch/job"));
    assert_eq!(batch.len(), 1, "{items:?}");
    assert_eq!(
        (&batch[0]["current_ndots"], &batch[0]["stub"]),
        (&5.into(), &"musl".into())
    );
    let cluster_wide = of(None);
    assert!(!cluster_wide.is_empty(), "{items:?}");
    for item in &cluster_wide {
        // Only the clients no workload lists (namespace default) are in it.
        for w in item["workloads"].as_array().unwrap() {
            assert_eq!(w["namespace"], "default", "{item}");
        }
    }
    for item in items {
        let stub = item["stub"].as_str().unwrap();
        let (now, after) = (
            item["current_ndots"].as_u64().unwrap().to_string(),
            item["ndots"].as_u64().unwrap().to_string(),
        );
        let base: Vec<&str> = match item["scope"]["workload"].as_str() {
            Some(w) => vec!["--pod-dns-config", wl, "--workload", w, "--stub", stub],
            None => vec!["--search", DEFAULT_SEARCH, "--stub", stub],
        };
        let names = item["names"].as_array().unwrap();
        assert!(!names.is_empty(), "{item}");
        for n in names {
            let name = n["name"].as_str().unwrap();
            let at = n["resolves_at"].as_str().unwrap();
            let walk = |ndots: &str| {
                let mut args = base.clone();
                args.extend(["--ndots", ndots]);
                simulate(&args, name, &[at])
            };
            assert_eq!(n["queries_now"], walk(&now), "{item}");
            assert_eq!(n["queries_after"], walk(&after), "{item}");
        }
    }
}
