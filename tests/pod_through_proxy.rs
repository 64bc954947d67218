//! Real pod clients through the proxy (issues 2 and 3): glibc's resolver (`getent ahosts`) and
//! musl's (a static client) in a private network + mount namespace with a pod's resolv.conf
//! (`search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal`, `ndots:5`),
//! the proxy on 127.0.0.1:53 and the scripted upstream beside it.
//!
//! For each shortcut mode (off, nxdomain, autopath) and each name, a fresh proxy (empty cache)
//! serves one getaddrinfo; the test checks the addresses are the same as with the shortcut off
//! and counts what reached the upstream. The table is printed (`--nocapture`).

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use common::clients::{build_musl_client, glibc_addresses, musl_addresses};
use common::netns;
use common::scripted_dns::ScriptedDns;
use common::upstream::{Rec, Upstream};
use ndots::config::{Config, FileConfig, Overrides};
use ndots::search::Answer;

const POD_RESOLV_CONF: &str = "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\noptions ndots:5 timeout:1 attempts:1\n";

fn proxy(mode: &str, up: &Upstream, rt: &tokio::runtime::Runtime) -> ndots::proxy::Running {
    proxy_with_timeout(mode, up, rt, ndots::config::DEFAULT_UPSTREAM_TIMEOUT)
}

/// Queries the upstream got for lookups (the readiness probe's SOA queries left out).
fn lookup_queries(up: &Upstream) -> usize {
    up.seen
        .lock()
        .unwrap()
        .iter()
        // Not the proxy's own: SOA health probes, the HINFO forwarding-loop probe.
        .filter(|s| s.qtype != ndots::wire::TYPE_SOA && s.qtype != 13)
        // Distinct questions: a question asked again after the upstream's usual round trip
        // (docs/faults.md, under a loaded CI machine) is the transport's, not one the
        // client's lookup caused (CI saw 4 datagrams for the 3 questions of a walk).
        .map(|s| (s.qname.to_ascii_lowercase(), s.qtype))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[test]
fn pod_clients_get_the_same_answers_with_less_upstream_load() {
    let Some(ns) = netns::enter("pod_clients_get_the_same_answers_with_less_upstream_load") else {
        return;
    };
    ns.set_resolv_conf(POD_RESOLV_CONF);
    let up = Upstream::start();
    up.add(
        "api.github.com.",
        1,
        Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60),
    );
    up.add(
        "web.default.svc.cluster.local.",
        1,
        Rec::A(Ipv4Addr::new(10, 96, 0, 10), 30),
    );
    up.add(
        "web.prod.svc.cluster.local.",
        1,
        Rec::A(Ipv4Addr::new(10, 96, 0, 7), 30),
    );
    let musl = build_musl_client(ns.scratch());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // In this order, per client and mode, through one proxy whose cache starts empty: the
    // second external name shows the steady state once `com.svc.cluster.local` is known.
    let names = [
        "api.github.com",
        "www.github.com",
        "web",
        "web.prod",
        "web.prod.svc",
    ];
    up.add(
        "www.github.com.",
        1,
        Rec::A(Ipv4Addr::new(140, 82, 112, 3), 60),
    );
    let mut clients: Vec<&str> = vec!["glibc"];
    if musl.is_some() {
        clients.push("musl");
    }
    println!("upstream queries per getaddrinfo (A+AAAA), cache cold at the first name:");
    println!(
        "{:<8} {:<16} {:>5} {:>9} {:>9} {:>22}",
        "client", "name", "off", "nxdomain", "autopath", "nxdomain+segmentation"
    );
    // The last mode sends the shortcut's equal NXDOMAIN answers to an A+AAAA pair (one
    // client socket) as one segmented send when both are in one receive batch: the real
    // clients must read them as before.
    let segmented = || {
        common::tools::metric_sum(
            &ndots::metrics::install().render(),
            "ndots_udp_segmented_sends_total{outcome=\"sent\"}",
        )
    };
    let mut segmented_sends = 0.0;
    for client in &clients {
        let modes = ["off", "nxdomain", "autopath", "nxdomain+segmentation"];
        // counts[mode][name], answers[mode][name]
        let mut counts = vec![Vec::new(); modes.len()];
        let mut answers = vec![Vec::new(); modes.len()];
        for (m, mode) in modes.iter().enumerate() {
            let p = proxy(mode, &up, &rt);
            std::thread::sleep(Duration::from_millis(50));
            let before = segmented();
            for name in names {
                up.clear();
                let addrs = match *client {
                    "glibc" => glibc_addresses(name),
                    _ => musl_addresses(musl.as_ref().unwrap(), name),
                };
                counts[m].push(lookup_queries(&up));
                answers[m].push(addrs);
            }
            let sends = segmented() - before;
            if mode.ends_with("+segmentation") {
                segmented_sends += sends;
            } else {
                assert_eq!(
                    sends, 0.0,
                    "{client} {mode}: segmented sends, not asked for"
                );
            }
            p.shutdown(Duration::from_millis(200));
        }
        for (i, name) in names.iter().enumerate() {
            println!(
                "{client:<8} {name:<16} {:>5} {:>9} {:>9} {:>22}",
                counts[0][i], counts[1][i], counts[2][i], counts[3][i]
            );
            assert!(
                answers[0][i].is_some(),
                "{client} {name}: resolves with the shortcut off"
            );
            for m in 1..modes.len() {
                assert_eq!(
                    answers[m][i], answers[0][i],
                    "{client} {name}: mode {} changed the answer",
                    modes[m]
                );
            }
        }
        for m in 1..modes.len() {
            let mode = modes[m];
            // Off: every candidate, A and AAAA. On: the real name's pair, plus at the first
            // external name one check of the namespace `com` (RFC 8020), which the second
            // external name finds in the cache.
            assert_eq!(
                counts[0][0], 10,
                "{client}: the full walk reaches upstream with the shortcut off"
            );
            assert_eq!(
                counts[m][0], 3,
                "{client} {mode}: upstream queries for the first external name"
            );
            assert_eq!(
                counts[m][1], 2,
                "{client} {mode}: steady state is the real name's A and AAAA"
            );
            // In-cluster names resolve as before (checked above) and never cost more;
            // expansions the schema rules out (`web.prod.svc.default.svc.cluster.local`) are
            // still answered locally.
            for i in 2..names.len() {
                assert!(
                    counts[m][i] <= counts[0][i],
                    "{client} {} {mode}: added load",
                    names[i]
                );
            }
        }
    }
    println!("segmented sends with nxdomain+segmentation: {segmented_sends}");
    assert!(
        segmented_sends > 0.0,
        "no A+AAAA pair of NXDOMAIN answers left as one segmented send"
    );
}

#[test]
fn report_has_exact_figures_for_a_known_glibc_lookup() {
    let Some(ns) = netns::enter("report_has_exact_figures_for_a_known_glibc_lookup") else {
        return;
    };
    ns.set_resolv_conf(POD_RESOLV_CONF);
    let up = Upstream::start();
    up.add(
        "api.github.com.",
        1,
        Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for mode in ["off", "nxdomain"] {
        let p = proxy(mode, &up, &rt);
        up.clear();
        assert!(common::clients::glibc_addresses("api.github.com").is_some());
        p.tracker().sync(true);
        let r: serde_json::Value = serde_json::from_str(&p.tracker().report_json(None)).unwrap();
        println!(
            "mode {mode}: {}",
            serde_json::to_string(&r["amplification"]).unwrap()
        );
        // One getaddrinfo with four search domains: an A walk and an AAAA walk of five
        // candidates each; four candidates per walk were wasted.
        assert_eq!(r["lookups"], 2, "{mode}: {r}");
        assert_eq!(r["queries"], 10, "{mode}");
        assert_eq!(r["wasted_queries"], 8, "{mode}");
        assert_eq!(r["amplification"]["max"], 5, "{mode}");
        assert_eq!(r["top_names"][0]["name"], "api.github.com.", "{mode}");
        assert_eq!(r["top_clients"][0]["namespace"], "default", "{mode}");
        let upstream = lookup_queries(&up) as u64;
        if mode == "off" {
            assert_eq!(r["shortcut_answers"], 0);
            assert_eq!(upstream, 10);
        } else {
            // The shortcut's saving is visible: answered locally, not sent upstream. The
            // `svc.cluster.local` pair is forwarded (and the namespace `com` checked once).
            assert_eq!(r["shortcut_answers"], 8, "{r}");
            assert_eq!(r["upstream_queries"], 2);
            assert_eq!(upstream, 3);
        }
        p.shutdown(Duration::from_millis(200));
    }
}

/// The autopath split (coredns#3765, #7120, found on be98eac): when one autopath candidate
/// failed for A only, the proxy forwarded the expansion and cached the upstream's NXDOMAIN for
/// `Q A` while `Q AAAA` was `CNAME X` + NODATA; glibc took the pair for an answer, stopped its
/// walk and returned EAI_NONAME for a name that exists.
///
/// X is `api.github.com.svc.cluster.local` (pod `api` of Service `github` in namespace `com`,
/// which the schema allows and whose ancestors exist), the first candidate after `Q`. In each
/// scenario X answers differently: its A never answered and AAAA NODATA (the split); NODATA for
/// both (glibc walks past, musl stops: autopath must not stop glibc with a CNAME); an address
/// for A only (A and AAAA answered differently; a guard, be98eac passed it). Every client's
/// result must equal the
/// shortcut-off result, glibc and musl, on a cold cache and again on a warm one.
#[test]
fn autopath_candidate_failing_for_one_type_never_splits_a_and_aaaa() {
    let Some(ns) = netns::enter("autopath_candidate_failing_for_one_type_never_splits_a_and_aaaa")
    else {
        return;
    };
    ns.set_resolv_conf(
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\noptions ndots:5 timeout:3 attempts:1\n",
    );
    let musl = build_musl_client(ns.scratch());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let x = "api.github.com.svc.cluster.local.";
    type Setup<'a> = &'a dyn Fn(&Upstream);
    let scenarios: [(&str, Setup); 3] = [
        ("A unanswered, AAAA NODATA", &|up| {
            up.add(x, 16, Rec::BigTxt(8, 60));
            up.silent_for.lock().unwrap().push((x.into(), 1));
        }),
        ("NODATA for both", &|up| up.add(x, 16, Rec::BigTxt(8, 60))),
        ("A only", &|up| {
            up.add(x, 1, Rec::A(Ipv4Addr::new(10, 1, 2, 3), 60))
        }),
    ];
    let mut clients = vec!["glibc"];
    if musl.is_some() {
        clients.push("musl");
    }
    for (scenario, setup) in scenarios {
        let up = Upstream::start();
        up.add(
            "api.github.com.",
            1,
            Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60),
        );
        setup(&up);
        let lookup = |client: &str| match client {
            "glibc" => glibc_addresses("api.github.com"),
            _ => musl_addresses(musl.as_ref().unwrap(), "api.github.com"),
        };
        for client in &clients {
            let mut results = Vec::new();
            for mode in ["off", "autopath"] {
                let p = proxy_with_timeout(mode, &up, &rt, Duration::from_millis(300));
                // Cold cache, then warm: the second lookup meets what the first one cached.
                let cold = lookup(client);
                let warm = lookup(client);
                println!("{scenario}: {client} {mode}: cold {cold:?} warm {warm:?}");
                results.push((mode, cold, warm));
                p.shutdown(Duration::from_millis(200));
            }
            let (_, off_cold, off_warm) = &results[0];
            if *client == "glibc" {
                // glibc finds an address in every scenario (the split turned the first into
                // EAI_NONAME).
                assert!(
                    off_cold.is_some(),
                    "{scenario}: glibc resolves, shortcut off"
                );
            }
            for (mode, cold, warm) in &results[1..] {
                assert_eq!(
                    cold, off_cold,
                    "{scenario}: {client} {mode} cold: result changed"
                );
                assert_eq!(
                    warm, off_warm,
                    "{scenario}: {client} {mode} warm: result changed"
                );
            }
        }
    }
}

/// Autopath answered `Q CNAME target` + NODATA when the target had no record of the asked
/// type, and a client asking that type alone stopped there. `api.github.com.svc.cluster.local`
/// (pod `api` of Service `github` in a namespace `com`, which the schema allows) has an A record
/// only and `api.github.com.` has A, AAAA and TXT: glibc's getaddrinfo(AF_INET6) failed with
/// EAI_NONAME where without the proxy it walks past the pod's NODATA to the AAAA, and glibc's
/// res_search for TXT got the CNAME alone. Every lookup here (glibc: AF_INET6, AF_INET,
/// AF_UNSPEC, res_search TXT; musl: AF_INET6, AF_UNSPEC) must get exactly what it gets with the
/// shortcut off, on a cold cache and on a warm one.
#[test]
fn autopath_cname_to_a_target_without_the_asked_type_ended_single_type_walks() {
    let Some(ns) =
        netns::enter("autopath_cname_to_a_target_without_the_asked_type_ended_single_type_walks")
    else {
        return;
    };
    ns.set_resolv_conf(
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\noptions ndots:5 timeout:3 attempts:1\n",
    );
    let musl = build_musl_client(ns.scratch());
    let glibc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/glibc_lookup.py");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let up = Upstream::start();
    let base = "api.github.com.";
    up.add(base, 1, Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60));
    up.add(base, 28, Rec::Aaaa("2001:db8::6".parse().unwrap(), 60));
    up.add(base, 16, Rec::BigTxt(8, 60));
    let pod = "api.github.com.svc.cluster.local.";
    up.add(pod, 1, Rec::A(Ipv4Addr::new(10, 1, 2, 3), 60));
    let mut lookups = vec![
        ("glibc", "inet6"),
        ("glibc", "inet"),
        ("glibc", "unspec"),
        ("glibc", "TXT"),
    ];
    if musl.is_some() {
        lookups.extend([("musl", "inet6"), ("musl", "unspec")]);
    }
    // The result an application sees: its addresses or records, or its error; not the
    // canonical name, which autopath changes by design (docs/shortcut.md).
    let lookup = |client: &str, kind: &str| {
        let mut cmd = match client {
            "glibc" => {
                let mut c = std::process::Command::new("python3");
                c.arg(&glibc);
                c
            }
            _ => std::process::Command::new(musl.as_ref().unwrap()),
        };
        let (ok, out) = common::clients::run_client(cmd.args(["api.github.com", kind]));
        let lines: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("canon "))
            .map(str::to_string)
            .collect();
        (ok, lines)
    };
    for (client, kind) in lookups {
        let mut results = Vec::new();
        for mode in ["off", "autopath"] {
            let p = proxy_with_timeout(mode, &up, &rt, Duration::from_millis(300));
            let cold = lookup(client, kind);
            let warm = lookup(client, kind);
            println!("{client} {kind} {mode}: cold {cold:?} warm {warm:?}");
            results.push((mode, cold, warm));
            p.shutdown(Duration::from_millis(200));
        }
        let (_, off_cold, off_warm) = &results[0];
        if (client, kind) == ("glibc", "inet6") {
            // A guard: the walk without the proxy's shortcut passes the pod's NODATA.
            assert_eq!(
                off_cold.1,
                ["addr 2001:db8::6"],
                "glibc AF_INET6, shortcut off"
            );
        }
        let (_, cold, warm) = &results[1];
        assert_eq!(
            cold, off_cold,
            "{client} {kind} autopath cold: result changed"
        );
        assert_eq!(
            warm, off_warm,
            "{client} {kind} autopath warm: result changed"
        );
    }
}

/// A prefetch of an autopath answer was a plain forward of the expansion: the upstream's
/// NXDOMAIN replaced the synthesized CNAME, and `Q A` turned NXDOMAIN while `Q AAAA` (not
/// prefetched) still held the CNAME. glibc through the proxy across the refresh must keep
/// resolving, and the refreshed entry must still be the CNAME.
#[test]
fn autopath_prefetch_keeps_the_synthesized_cname() {
    let Some(ns) = netns::enter("autopath_prefetch_keeps_the_synthesized_cname") else {
        return;
    };
    ns.set_resolv_conf(POD_RESOLV_CONF);
    let up = Upstream::start();
    // Ten seconds is the shortest TTL the cache prefetches (the last tenth of it).
    up.add(
        "api.github.com.",
        1,
        Rec::A(Ipv4Addr::new(140, 82, 112, 6), 10),
    );
    up.add(
        "api.github.com.",
        28,
        Rec::Aaaa("2001:db8::6".parse().unwrap(), 10),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let p = proxy("autopath", &up, &rt);
    let start = std::time::Instant::now();
    let want = glibc_addresses("api.github.com");
    assert!(want.is_some());
    // Hits enough to be popular, then one inside the last second of the TTL (prefetch).
    for _ in 0..2 {
        assert_eq!(glibc_addresses("api.github.com"), want);
    }
    std::thread::sleep(Duration::from_millis(9_200).saturating_sub(start.elapsed()));
    up.clear();
    assert_eq!(glibc_addresses("api.github.com"), want, "at the prefetch");
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        up.count("api.github.com.default.svc.cluster.local.", 1),
        0,
        "the prefetch followed autopath and never forwarded the expansion: {:?}",
        up.seen.lock().unwrap()
    );
    assert!(
        up.count("api.github.com.", 1) >= 1,
        "the prefetch refreshed the candidate too (it re-read its old entry): {:?}",
        up.seen.lock().unwrap()
    );
    // The old entry has expired; what answers now is the prefetched one.
    let (_, info) = ask(
        p.dns_addrs[0],
        "api.github.com.default.svc.cluster.local.",
        1,
    );
    assert_eq!(
        info.0, 0,
        "the expansion still answers with the CNAME, not NXDOMAIN"
    );
    assert!(info.1 >= 2, "CNAME and the target's A");
    assert_eq!(
        glibc_addresses("api.github.com"),
        want,
        "after the prefetch"
    );
    p.shutdown(Duration::from_millis(200));
}

/// The outcome an application was told, from a client's `error CODE` line: glibc's EAI_*
/// (NONAME -2, AGAIN -3, NODATA -5), c-ares' ARES_E* (NODATA 1, SERVFAIL 3, NOTFOUND 4;
/// c-ares 1.18 says ECONNREFUSED 11 when every try of a query was answered SERVFAIL).
fn told(client: &str, out: &str) -> String {
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("error "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("none");
    let outcome = match (client, code) {
        ("glibc", "-2") | ("c-ares", "4") | ("pycares", "4") => "nxdomain",
        ("glibc", "-5") | ("c-ares", "1") | ("pycares", "1") => "nodata",
        ("glibc", "-3") | ("c-ares", "3" | "11") | ("pycares", "3") => "servfail",
        _ => return format!("{client} error {code}"),
    };
    outcome.to_string()
}

/// A walk that finds nothing is reported with the outcome the application was told
/// (walk_reported_nxdomain_when_an_earlier_candidate_was_nodata, src/amplify/tests.rs): real
/// clients are the oracle. For `mydb` under the pod's search list, with every other name
/// NXDOMAIN: the namespace candidate NODATA (the name exists, without addresses), the svc
/// candidate SERVFAIL, or nothing anywhere. glibc (getaddrinfo through Python), c-ares 1.18
/// (the system's, `ares_getaddrinfo`) and c-ares 1.34 (pycares) each look the name up once
/// through a fresh proxy; every lookup in its `/report` must carry the outcome the client
/// was told. Not here: musl 1.2.3 reports NODATA as EAI_NONAME (and stops there, so its walk
/// ends on the NODATA answer), Go says "no such host" for NXDOMAIN and NODATA alike.
#[test]
fn report_outcomes_are_what_real_clients_were_told() {
    let Some(ns) = netns::enter("report_outcomes_are_what_real_clients_were_told") else {
        return;
    };
    ns.set_resolv_conf(POD_RESOLV_CONF);
    let server = ScriptedDns::start("127.0.0.1:5300".parse().unwrap()).unwrap();
    let glibc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/glibc_gai.py");
    // (label, program, arguments before the name)
    let mut clients: Vec<(&str, PathBuf, Vec<PathBuf>)> =
        vec![("glibc", "python3".into(), vec![glibc])];
    if let Some((bin, version)) = common::clients::build_cares_client(ns.scratch()) {
        println!("c-ares client: libcares {version}");
        clients.push(("c-ares", bin, vec![]));
    }
    if let Some((bin, version)) = common::clients::pycares_client(ns.scratch()) {
        println!("pycares client: c-ares {version}");
        clients.push(("pycares", bin, vec![]));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // (outcome, the answer that is not NXDOMAIN, tries per query): with two tries each
    // client asks the SERVFAIL candidate again, and the tracker must take the retry for one.
    type Case<'a> = (&'a str, Option<(&'a str, Answer)>, u32);
    let cases: [Case; 4] = [
        ("nxdomain", None, 1),
        (
            "nodata",
            Some(("mydb.default.svc.cluster.local.", Answer::NoData)),
            1,
        ),
        (
            "servfail",
            Some(("mydb.svc.cluster.local.", Answer::ServFail)),
            1,
        ),
        (
            "servfail",
            Some(("mydb.svc.cluster.local.", Answer::ServFail)),
            2,
        ),
    ];
    let mut failures = Vec::new();
    for (want, answer, tries) in cases {
        ns.set_resolv_conf(&POD_RESOLV_CONF.replace("attempts:1", &format!("attempts:{tries}")));
        server.set_answers(answer.map(|(n, a)| (n.to_string(), None, a)));
        for (client, program, args) in &clients {
            let p = proxy_to("off", server.addr, &rt, Duration::from_millis(500));
            server.take_log();
            let (ok, out) = common::clients::run_client(
                std::process::Command::new(program).args(args).arg("mydb"),
            );
            let walk = server.take_log();
            p.tracker().sync(true);
            let r: serde_json::Value =
                serde_json::from_str(&p.tracker().report_json(None)).unwrap();
            p.shutdown(Duration::from_millis(200));
            let got = told(client, &out);
            let outcomes = r["outcomes"].as_object().cloned().unwrap_or_default();
            let reported: Vec<&String> = outcomes
                .iter()
                .filter(|(_, n)| n.as_u64() > Some(0))
                .map(|(k, _)| k)
                .collect();
            println!(
                "{want:<8} x{tries} {client:<7} told {got:<10} report {reported:?}, {} queries upstream",
                walk.len()
            );
            if ok || got != want || reported != [want] || r["lookups"].as_u64() < Some(1) {
                failures.push(format!(
                    "{want} x{tries}: {client} told {got:?} (ok {ok}), report {}",
                    r["outcomes"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// One UDP query to the proxy: the raw answer and (rcode, ancount).
fn ask(addr: std::net::SocketAddr, name: &str, qtype: u16) -> (Vec<u8>, (u16, u16)) {
    let mut q = Vec::new();
    ndots::wire::build_query(0x4242, name, qtype, false, &mut q).unwrap();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(&q, addr).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("an answer");
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).expect("a readable answer");
    (
        buf[..n].to_vec(),
        (u16::from(m.metadata.response_code), m.answers.len() as u16),
    )
}

fn proxy_with_timeout(
    mode: &str,
    up: &Upstream,
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
) -> ndots::proxy::Running {
    proxy_to(mode, up.addr, rt, timeout)
}

/// A proxy on 127.0.0.1:53 forwarding to `upstream` (`mode`: the shortcut mode; with
/// `+segmentation` after it, `server.udp_segmentation` on).
fn proxy_to(
    mode: &str,
    upstream: std::net::SocketAddr,
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
) -> ndots::proxy::Running {
    let (mode, segmentation) = match mode.strip_suffix("+segmentation") {
        Some(mode) => (mode, true),
        None => (mode, false),
    };
    let yaml = format!(
        "listen: [\"127.0.0.1:53\"]\nserver: {{workers: 1, udp_segmentation: {segmentation}}}\ncluster: {{node_search: [ec2.internal]}}\nshortcut: {{mode: {mode}, zones: [github.com]}}\n"
    );
    let overrides = Overrides {
        upstreams: vec![(".".into(), upstream)],
        ..Default::default()
    };
    let mut cfg = Config::from_file_config(FileConfig::parse(&yaml).unwrap(), &overrides).unwrap();
    cfg.admin = None;
    for z in cfg.upstreams.iter_mut() {
        z.timeout = timeout;
    }
    ndots::proxy::start(cfg, rt.handle()).expect("binding 127.0.0.1:53 in the namespace")
}
