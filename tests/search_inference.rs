//! Search-list inference on real captures (/work/shared/data, copied from public issues and
//! projects): `ndots analyze` without `--search` finds the node's search domains from the
//! walks themselves, so lookups are not counted one query each.

use std::process::Command;

fn analyze(capture: &str) -> serde_json::Value {
    // As tests/captures.rs: the shared samples sit beside the project.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(capture);
    assert!(
        path.exists(),
        "{}: shared/ must sit beside the project",
        path.display()
    );
    let path = path.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .args(["analyze", &path, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn search(r: &serde_json::Value) -> Vec<&str> {
    r["search"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// zeek-erspan's client walks `www.xkcd.com.sp.local` (NXDOMAIN) then `www.xkcd.com.`: a walk
/// that begins with the expansion. Before, nothing was inferred and every query counted as a
/// lookup of its own (5 queries, 5 lookups).
#[test]
fn zeek_erspan_infers_no_search_list_from_a_walk_that_begins_with_the_expansion() {
    let r = analyze("pcap/zeek-erspan.pcap");
    assert!(search(&r).contains(&"sp.local"), "{:?}", r["search"]);
    assert_eq!(r["search_from"], "inferred");
    assert_eq!(
        (r["queries"].as_u64(), r["lookups"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(r["by_suffix"]["node"], 2, "{}", r["by_suffix"]);
}

/// zeek-teredo and zeek-wikipedia: walks that begin with the name as written
/// (`B.` failed, then `B.S`) give `gateway.2wire.net` and `ncsa.uiuc.edu`.
#[test]
fn zeek_teredo_and_wikipedia_infer_no_search_list_from_walks_that_begin_with_the_name() {
    for (cap, domain) in [
        ("pcap/zeek-teredo.pcap", "gateway.2wire.net"),
        ("pcap/zeek-wikipedia.pcap", "ncsa.uiuc.edu"),
    ] {
        let r = analyze(cap);
        assert!(search(&r).contains(&domain), "{cap}: {:?}", r["search"]);
        let (q, l) = (
            r["queries"].as_u64().unwrap(),
            r["lookups"].as_u64().unwrap(),
        );
        assert!(q > l, "{cap}: {q} queries for {l} lookups: no walk found");
    }
}

/// 08-coredns-4066 holds only `example.com.ec2.internal.` (NXDOMAIN, A and AAAA): the AWS
/// node domain searched, not a name anyone asked for. The report named
/// `example.com.ec2.internal.` as the name asked.
#[test]
fn coredns_4066_reports_example_com_ec2_internal_as_a_name_the_app_asked_for() {
    let r = analyze("coredns-log/08-coredns-coredns-4066.log");
    assert!(search(&r).contains(&"ec2.internal"), "{:?}", r["search"]);
    let names: Vec<&str> = r["top_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().trim_end_matches('.'))
        .collect();
    assert_eq!(names, ["example.com"]);
    assert_eq!(r["by_suffix"]["node"], 2, "{}", r["by_suffix"]);
}
