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
        .filter(|s| s.qtype != ndots::wire::TYPE_SOA)
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

    let names = ["api.github.com", "web", "web.prod", "web.prod.svc"];
    let mut clients: Vec<&str> = vec!["glibc"];
    if musl.is_some() {
        clients.push("musl");
    }
    println!(
        "{:<8} {:<16} {:>5} {:>9} {:>9}",
        "client", "name", "off", "nxdomain", "autopath"
    );
    for client in &clients {
        for name in names {
            let mut counts = Vec::new();
            let mut baseline: Option<Option<Vec<String>>> = None;
            for mode in ["off", "nxdomain", "autopath"] {
                let p = proxy(mode, &up, &rt);
                std::thread::sleep(Duration::from_millis(50));
                up.clear();
                let addrs = match *client {
                    "glibc" => glibc_addresses(name),
                    _ => musl_addresses(musl.as_ref().unwrap(), name),
                };
                counts.push(lookup_queries(&up));
                p.shutdown(Duration::from_millis(200));
                match &baseline {
                    None => {
                        assert!(
                            addrs.is_some(),
                            "{client} {name}: resolves with the shortcut off"
                        );
                        baseline = Some(addrs);
                    }
                    Some(b) => {
                        assert_eq!(&addrs, b, "{client} {name}: mode {mode} changed the answer")
                    }
                }
            }
            println!(
                "{client:<8} {name:<16} {:>5} {:>9} {:>9}",
                counts[0], counts[1], counts[2]
            );
            if name == "api.github.com" {
                // Off: every candidate, A and AAAA (glibc 10, musl 10). On: the real name's pair
                // plus the svc.cluster.local expansion, which the schema cannot rule out
                // (`api` . `github` . namespace `com`) and so is always forwarded.
                assert_eq!(
                    counts[0], 10,
                    "{client}: the full walk reaches upstream with the shortcut off"
                );
                assert!(
                    counts[1] <= 4,
                    "{client}: nxdomain mode sent {} upstream",
                    counts[1]
                );
                assert!(
                    counts[2] <= 4,
                    "{client}: autopath mode sent {} upstream",
                    counts[2]
                );
            } else {
                // In-cluster names resolve as before (checked above) and never cost more;
                // expansions the schema rules out (`web.prod.svc.default.svc.cluster.local`)
                // are still answered locally.
                assert!(
                    counts[1] <= counts[0],
                    "{client} {name}: nxdomain mode added load"
                );
                assert!(
                    counts[2] <= counts[0],
                    "{client} {name}: autopath mode added load"
                );
            }
        }
    }
}
