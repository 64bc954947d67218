//! `ndots demo --format json` end to end (issue 9): the shortcut must cut the upstream load
//! without changing a single answer.

use std::process::Command;

use serde_json::Value;

fn demo(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .arg("demo")
        .args(["--format", "json"])
        .args(args)
        .output()
        .expect("running ndots demo");
    assert!(
        out.status.success(),
        "ndots demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("demo JSON")
}

#[test]
fn shortcut_sends_fewer_upstream_queries_with_identical_answers() {
    let d = demo(&["--lookups", "600", "--upstream-delay", "0ms", "--seed", "3"]);
    let runs = d["runs"].as_array().unwrap();
    let modes: Vec<&str> = runs.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["off", "nxdomain", "autopath"]);
    let off = &runs[0];
    let off_upstream = off["upstream_queries"].as_u64().unwrap();
    assert!(off_upstream > 0, "the off run reached the upstream");
    assert!(
        off["resolved"].as_u64().unwrap() > 0,
        "some lookups resolved"
    );
    assert!(
        off["report"]["wasted_queries"].as_u64().unwrap() > 0,
        "the tracker saw search-path waste with the shortcut off"
    );
    for on in &runs[1..] {
        let mode = on["mode"].as_str().unwrap();
        let up = on["upstream_queries"].as_u64().unwrap();
        assert!(
            up < off_upstream,
            "{mode}: {up} upstream queries, not fewer than off's {off_upstream}"
        );
        assert!(
            on["report"]["shortcut_answers"].as_u64().unwrap() > 0,
            "{mode}"
        );
        assert_eq!(
            on["answers_digest"], off["answers_digest"],
            "{mode}: the answers differ from off's: {}",
            d["mismatches"]
        );
        assert_eq!(on["resolved"], off["resolved"], "{mode}");
        assert_eq!(on["lookups"], off["lookups"], "{mode}");
    }
    assert_eq!(d["mismatched_lookups"], 0, "{}", d["mismatches"]);
    // Autopath ends the pods' walks early: fewer queries from the pods, not only upstream.
    let pod_q = |r: &Value| r["pod_queries"].as_u64().unwrap();
    assert!(pod_q(&runs[2]) < pod_q(off));
}

#[test]
fn demo_traffic_is_deterministic_from_the_seed() {
    let a = demo(&[
        "--lookups",
        "150",
        "--upstream-delay",
        "0ms",
        "--modes",
        "nxdomain",
    ]);
    let b = demo(&[
        "--lookups",
        "150",
        "--upstream-delay",
        "0ms",
        "--modes",
        "nxdomain",
    ]);
    for i in 0..2 {
        let (ra, rb) = (&a["runs"][i], &b["runs"][i]);
        assert_eq!(ra["answers_digest"], rb["answers_digest"]);
        assert_eq!(ra["pod_queries"], rb["pod_queries"]);
        assert_eq!(ra["report"]["queries"], rb["report"]["queries"]);
    }
}
