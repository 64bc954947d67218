//! The report's advice through the binary: every ndots claim (`queries_now`, `queries_after`,
//! the name it resolves at) is checked against `ndots simulate` with the same stub, search
//! list and answers; shortcut zones never hold the cluster domain; a capture that is not
//! Kubernetes traffic gets no ndots advice; the ndots advice prices only the lookups that
//! walked the search list.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::jsonl::event;

fn ndots() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ndots"))
}

fn run_json(args: &[&str]) -> Value {
    let out = ndots().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ndots {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn synth(dir: &Path, queries: u32, seed: u32) -> PathBuf {
    let p = dir.join(format!("synth-{seed}.pcap"));
    let out = ndots()
        .args(["capture", "synth", "--queries", &queries.to_string()])
        .args(["--seed", &seed.to_string(), "-o"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    p
}

/// `ndots simulate NAME` under one ndots: (queries sent, the name that resolved).
fn simulate(stub: &str, ndots: u64, search: &[Value], name: &str, at: &str) -> (usize, String) {
    let search: Vec<&str> = search.iter().map(|s| s.as_str().unwrap()).collect();
    let v = run_json(&[
        "simulate",
        name,
        "--stub",
        stub,
        "--ndots",
        &ndots.to_string(),
        "--search",
        &search.join(" "),
        "--exists",
        at,
        "--format",
        "json",
    ]);
    (
        v["queries"].as_array().unwrap().len(),
        v["result"]["qname"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn every_ndots_claim_of_the_advice_matches_ndots_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let cap = synth(dir.path(), 20_000, 3);
    let report = run_json(&["analyze", cap.to_str().unwrap(), "--format", "json"]);
    let advice = report["advice"].as_array().expect("advice list");
    let ndots_items: Vec<&Value> = advice.iter().filter(|a| a["kind"] == "ndots").collect();
    assert!(!ndots_items.is_empty(), "{advice:#?}");
    let mut checked = 0;
    for item in &ndots_items {
        let stub = item["stub"].as_str().unwrap();
        let search = item["search"].as_array().unwrap();
        let (now, after) = (
            item["current_ndots"].as_u64().unwrap(),
            item["ndots"].as_u64().unwrap(),
        );
        assert!(after < now);
        // The libc is unknown in a capture: the musl caveat and its replay command come along.
        assert!(
            item["caveats"].as_array().unwrap().iter().any(|c| c
                .as_str()
                .unwrap()
                .contains(&format!("--ndots {after} --stub musl"))),
            "{item:#}"
        );
        for n in item["names"].as_array().unwrap() {
            let name = n["name"].as_str().unwrap();
            let at = n["resolves_at"].as_str().unwrap();
            let (q_now, r_now) = simulate(stub, now, search, name, at);
            let (q_after, r_after) = simulate(stub, after, search, name, at);
            assert_eq!(
                q_now as u64,
                n["queries_now"].as_u64().unwrap(),
                "{stub} {name} now"
            );
            assert_eq!(
                q_after as u64,
                n["queries_after"].as_u64().unwrap(),
                "{stub} {name} after"
            );
            // The advised setting never changes where a name resolves.
            assert_eq!(
                (r_now.as_str(), r_after.as_str()),
                (at, at),
                "{stub} {name}"
            );
            checked += 1;
        }
        // The names that keep ndots from going lower really would resolve elsewhere there.
        for name in item["limited_by"].as_array().unwrap() {
            let name = name.as_str().unwrap();
            let claim = item["names"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == name);
            if let Some(claim) = claim {
                let at = claim["resolves_at"].as_str().unwrap();
                let (_, lower) = simulate(stub, after - 1, search, name, at);
                assert_ne!(lower, at, "{stub} {name} at ndots:{}", after - 1);
            }
        }
    }
    assert!(checked >= 10, "only {checked} claims");
    // musl needs a higher ndots than glibc here (in-cluster `api.default` has one dot).
    let by_stub = |s: &str| {
        ndots_items
            .iter()
            .find(|i| i["stub"] == s)
            .map(|i| i["ndots"].as_u64().unwrap())
    };
    assert!(by_stub("musl").unwrap() >= by_stub("glibc").unwrap());
    // Shortcut zones: never the cluster domain.
    for a in advice.iter().filter(|a| a["kind"] == "shortcut_zones") {
        for z in a["zones"].as_array().unwrap() {
            let z = z.as_str().unwrap();
            assert!(
                !z.ends_with("cluster.local") && !"cluster.local".ends_with(z),
                "{z}"
            );
        }
    }
    // The text form says the same figures, advice first.
    let out = ndots().arg("analyze").arg(&cap).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.find("advice").unwrap() < text.find("top names").unwrap());
    assert!(!text.contains("(unknown)"));
}

#[test]
fn a_capture_that_is_not_kubernetes_traffic_gets_no_ndots_advice() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/pcap/zeek-wikipedia.pcap");
    if !path.exists() {
        panic!("{} is missing (the shared samples)", path.display());
    }
    let report = run_json(&["analyze", path.to_str().unwrap(), "--format", "json"]);
    let advice = report["advice"].as_array().unwrap();
    assert!(
        !advice.iter().any(|a| a["kind"] == "ndots"),
        "ndots advice for a non-Kubernetes capture: {advice:#?}"
    );
    // The search domain is read off the walks that begin with the name as written
    // (`upload.wikimedia.org.` NODATA, then `upload.wikimedia.org.ncsa.uiuc.edu.`).
    assert_eq!(
        report["search"][3], "ncsa.uiuc.edu",
        "{:#}",
        report["search"]
    );
    assert_eq!(report["search_from"], "inferred");
    assert!(report["lookups"].as_u64() < report["queries"].as_u64());
    let html = ndots()
        .arg("analyze")
        .arg(&path)
        .args(["--format", "html"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&html.stdout).contains("(unknown)"));
}

/// A black-box probe: five pods asked `api.github.com.` only as written (an FQDN: one query
/// per lookup, the same at any ndots) and one pod walked the search list to it. The ndots
/// advice priced every lookup of the name by the stub model's walk, claiming savings for the
/// FQDN lookups too, where `ndots replay` saves only the walking pod's queries.
#[test]
fn ndots_advice_priced_lookups_that_never_walked_the_search_list() {
    const WALKER: &str = "10.0.0.5";
    let mut c = String::new();
    let mut t = 1_700_000_000.0;
    let mut q = |client: &str, name: &str, qtype: &str, rcode: &str, n: u16| {
        t += 0.001;
        event(&mut c, t, client, name, qtype, rcode, n);
    };
    for pod in 1..=5 {
        let client = format!("10.0.1.{pod}");
        for _ in 0..2 {
            for qt in ["A", "AAAA"] {
                q(&client, "api.github.com.", qt, "NOERROR", 1);
            }
        }
    }
    for s in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ] {
        for qt in ["A", "AAAA"] {
            q(WALKER, &format!("api.github.com.{s}"), qt, "NXDOMAIN", 0);
        }
    }
    for qt in ["A", "AAAA"] {
        q(WALKER, "api.github.com.", qt, "NOERROR", 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.jsonl");
    std::fs::write(&path, c).unwrap();
    let p = path.to_str().unwrap();

    let report = run_json(&["analyze", p, "--format", "json"]);
    let gh = report["top_names"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "api.github.com.")
        .expect("api.github.com. in top_names");
    let walker = report["top_clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client"] == WALKER)
        .expect("the walking pod in top_clients");
    let walked = walker["lookups"].as_u64().unwrap();
    assert!(
        walked > 0 && walked < gh["lookups"].as_u64().unwrap(),
        "{gh}"
    );

    let items: Vec<&Value> = report["advice"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "ndots")
        .collect();
    assert!(!items.is_empty(), "{:#}", report["advice"]);
    for item in items {
        let claim = item["names"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "api.github.com")
            .unwrap_or_else(|| panic!("no claim for api.github.com: {item:#}"));
        assert_eq!(claim["lookups"].as_u64(), Some(walked), "{item:#}");
        // What replay saves at the advised ndots is what the advice priced: `queries_now` and
        // `queries_after` are one getaddrinfo (A and AAAA), `lookups` count each type.
        let stub = item["stub"].as_str().unwrap();
        let (now, after) = (
            item["current_ndots"].as_u64().unwrap(),
            item["ndots"].as_u64().unwrap(),
        );
        let replay = run_json(&[
            "replay",
            p,
            "--ndots",
            &format!("{after},{now}"),
            "--stub",
            stub,
            "--format",
            "json",
        ]);
        let queries = |ndots: u64| {
            replay["settings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["label"] == format!("ndots:{ndots} {stub}"))
                .unwrap_or_else(|| panic!("ndots:{ndots} {stub}: {replay:#}"))["queries"]
                .as_u64()
                .unwrap()
        };
        let per_pair =
            claim["queries_now"].as_u64().unwrap() - claim["queries_after"].as_u64().unwrap();
        assert_eq!(
            per_pair * walked / 2,
            queries(now) - queries(after),
            "{stub}: {claim}"
        );
    }
    // The report says which of the name's lookups walked.
    assert_eq!(gh["searched_lookups"].as_u64(), Some(walked), "{gh}");
}
