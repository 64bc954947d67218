//! Stub retries in captures, read against real stubs: glibc's getaddrinfo (`getent ahosts`)
//! and musl's (a static client) in a private network namespace with a pod's resolv.conf, a
//! scripted server on 127.0.0.1:53 that loses one query once, and `dumpcap` writing what went
//! over loopback to a pcap. `ndots analyze` of that pcap must read each lookup as the stub
//! made it: one lookup with a retry, not a lookup that timed out and a second one.
//!
//! Needs root (the namespace), dumpcap (scripts/deps/capture.txt) and musl-gcc
//! (scripts/deps/search.txt): skipped loudly without them, a failure under `CI=true`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::clients::{build_musl_client, glibc_addresses, musl_addresses};
use common::netns;
use common::scripted_dns::ScriptedDns;
use ndots::search::Answer;

const SEARCH: &str = "default.svc.cluster.local svc.cluster.local cluster.local";
const NAME: &str = "api.github.com.";
/// The walk's first candidate (ndots:5 tries the search list first).
const FIRST_CANDIDATE: &str = "api.github.com.default.svc.cluster.local.";
const AAAA: u16 = 28;

fn analyze(pcap: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .args(["analyze", "--format", "json", "--search", SEARCH])
        .arg(pcap)
        .output()
        .expect("ndots runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// glibc and musl each ask `api.github.com` under ndots:5 (A and AAAA at once on one socket);
/// the server loses the first AAAA query of the name as written, as the conntrack race of
/// two queries on one socket does in Kubernetes. glibc sends it again 5 s later (its
/// `timeout:5`, in single-request mode, the A query too), musl 2.5 s later (timeout over
/// attempts). Before, the 2 s idle window closed the AAAA walk first: a lookup that timed out
/// and a second lookup, the 5 s wait nowhere. Now the walk waits for the retry: no lookup
/// timed out, the retry is counted, and the wait is the lookup's duration.
///
/// Then the same with the walk's first candidate's AAAA lost. glibc's A query of that
/// candidate, answered NXDOMAIN, is sent again with the AAAA: it read as an NXDOMAIN lookup
/// closed at the idle window and a second A lookup from the same candidate on (3 lookups, one
/// `nxdomain`). The A sent again from the socket where the AAAA walk waits on its lost query
/// now continues the A walk as a retry: 2 lookups, both resolved.
#[test]
fn a_stub_retry_after_a_lost_query_was_read_as_a_timeout_and_a_second_lookup() {
    let Some(ns) =
        netns::enter("a_stub_retry_after_a_lost_query_was_read_as_a_timeout_and_a_second_lookup")
    else {
        return;
    };
    if netns::which("dumpcap").is_none() {
        netns::skip_or_fail("needs dumpcap (wireshark-common): see scripts/deps/capture.txt");
        return;
    }
    let Some(musl) = build_musl_client(ns.scratch()) else {
        return;
    };
    // glibc's defaults: timeout:5 attempts:2.
    ns.set_resolv_conf(&format!(
        "nameserver 127.0.0.1\nsearch {SEARCH}\noptions ndots:5\n"
    ));
    let addr: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let server = ScriptedDns::start(addr).expect("binding 127.0.0.1:53 in the namespace");
    server.set_answers([(NAME.to_string(), None, Answer::Address)]);

    type Ask<'a> = Box<dyn Fn() -> Option<Vec<String>> + 'a>;
    let stubs: [(&str, Ask, u64); 2] = [
        (
            "glibc",
            Box::new(|| glibc_addresses("api.github.com")),
            5_000,
        ),
        (
            "musl",
            Box::new(|| musl_addresses(&musl, "api.github.com")),
            2_500,
        ),
    ];
    for ((stub, ask, retry_ms), lost) in
        stubs.iter().flat_map(|s| [(s, NAME), (s, FIRST_CANDIDATE)])
    {
        let (stub, retry_ms) = (format!("{stub}, {lost} lost"), *retry_ms);
        let glibc = stub.starts_with("glibc");
        let pcap: PathBuf = ns
            .scratch()
            .join(format!("{}.pcap", stub.replace([' ', ','], "_")));
        server.drop_once(lost, AAAA);
        server.take_log();
        let dumpcap = common::tools::dumpcap("lo", &pcap);
        let addrs = ask();
        common::tools::stop_dumpcap(dumpcap);
        let log = server.take_log();
        assert_eq!(
            addrs,
            Some(vec!["192.0.2.10".to_string(), "2001:db8::10".to_string()]),
            "{stub}: both addresses, after the retry"
        );
        let aaaa_sent = log.iter().filter(|(n, t)| n == lost && *t == AAAA).count();
        assert_eq!(
            aaaa_sent, 2,
            "{stub}: the lost AAAA query and its retry: {log:?}"
        );

        let r = analyze(&pcap);
        eprintln!(
            "{stub}: lookups {}, queries {}, retries {}, outcomes {}, duration max {} ms",
            r["lookups"], r["queries"], r["retries"], r["outcomes"], r["duration_ms"]["max"]
        );
        assert_eq!(
            r["queries"],
            log.len(),
            "{stub}: every query the server received"
        );
        assert_eq!(r["input"]["unanswered"], 1, "{stub}: the lost one");
        let lookups = r["lookups"].as_u64().unwrap();
        assert_eq!(
            r["outcomes"],
            serde_json::json!({ "resolved": lookups }),
            "{stub}: no lookup timed out"
        );
        // glibc sends the pair again in single-request mode, the answered A query first:
        // after the first candidate's NXDOMAIN it is that walk's retry; after the name's
        // addresses, its walk has ended, and it reads as a lookup of its own (an answered
        // query asked again is a new lookup).
        let (retries, lookups_expected) = match (glibc, lost == NAME) {
            (true, true) => (1, 3),
            (true, false) => (2, 2),
            (false, _) => (1, 2),
        };
        assert_eq!(
            r["retries"], retries,
            "{stub}: the AAAA query sent again, and glibc's A: {r}"
        );
        assert_eq!(lookups, lookups_expected, "{stub}: {r}");
        // The stub starts its timeout before its send and the capture stamps each packet as
        // the kernel sees it, so the gap can fall a little short of the nominal timeout
        // (CI saw 4,999.632 ms for glibc's 5 s); the bug this pins read 0.255 ms.
        let max_ms = r["duration_ms"]["max"].as_f64().unwrap();
        assert!(
            max_ms >= retry_ms as f64 * 0.95,
            "{stub}: the longest lookup took {max_ms} ms, the stub retries after {retry_ms}"
        );
        let p99_ms = r["duration_ms"]["p99"].as_f64().unwrap();
        assert!(
            (p99_ms - max_ms).abs() <= max_ms / 100.0,
            "{stub}: p99 {p99_ms} ms of {lookups} lookups, the max {max_ms} ms"
        );
    }
}
