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
use std::time::Duration;

use common::clients::{build_musl_client, glibc_addresses, musl_addresses};
use common::netns;
use common::upstream::{Rec, Upstream};
use ndots::config::{Config, FileConfig, Overrides};

const POD_RESOLV_CONF: &str = "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\noptions ndots:5 timeout:1 attempts:1\n";

fn proxy(mode: &str, up: &Upstream, rt: &tokio::runtime::Runtime) -> ndots::proxy::Running {
    let yaml = format!(
        "listen: [\"127.0.0.1:53\"]\nserver: {{workers: 1}}\ncluster: {{node_search: [ec2.internal]}}\nshortcut: {{mode: {mode}, zones: [github.com]}}\n"
    );
    let overrides = Overrides {
        upstreams: vec![(".".into(), up.addr)],
        ..Default::default()
    };
    let mut cfg = Config::from_file_config(FileConfig::parse(&yaml).unwrap(), &overrides).unwrap();
    cfg.admin = None;
    ndots::proxy::start(cfg, rt.handle()).expect("binding 127.0.0.1:53 in the namespace")
}

/// Queries the upstream got for lookups (the readiness probe's SOA queries left out).
fn lookup_queries(up: &Upstream) -> usize {
    up.seen
        .lock()
        .unwrap()
        .iter()
        // Not the proxy's own: SOA health probes, the HINFO forwarding-loop probe.
        .filter(|s| s.qtype != ndots::wire::TYPE_SOA && s.qtype != 13)
        .count()
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
        "{:<8} {:<16} {:>5} {:>9} {:>9}",
        "client", "name", "off", "nxdomain", "autopath"
    );
    for client in &clients {
        let modes = ["off", "nxdomain", "autopath"];
        // counts[mode][name], answers[mode][name]
        let mut counts = vec![Vec::new(); modes.len()];
        let mut answers = vec![Vec::new(); modes.len()];
        for (m, mode) in modes.iter().enumerate() {
            let p = proxy(mode, &up, &rt);
            std::thread::sleep(Duration::from_millis(50));
            for name in names {
                up.clear();
                let addrs = match *client {
                    "glibc" => glibc_addresses(name),
                    _ => musl_addresses(musl.as_ref().unwrap(), name),
                };
                counts[m].push(lookup_queries(&up));
                answers[m].push(addrs);
            }
            p.shutdown(Duration::from_millis(200));
        }
        for (i, name) in names.iter().enumerate() {
            println!(
                "{client:<8} {name:<16} {:>5} {:>9} {:>9}",
                counts[0][i], counts[1][i], counts[2][i]
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
