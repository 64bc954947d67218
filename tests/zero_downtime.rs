//! Zero-downtime update (DESIGN §3, issue 7): two proxies share one address through
//! SO_REUSEPORT; dnsperf runs for 10 s against it and the first proxy gets SIGTERM in the
//! middle. The first drains (serves until its socket is empty, then closes) and no query is lost.
//! And the rolling update as a DaemonSet with `maxSurge` runs it (issue 20): each newcomer
//! announces itself (`POST /handover` on the shared admin port), the previous one drains and
//! then gets its SIGTERM, twice in a row under load.
//!
//! `NDOTS_UPDATE_QPS` sets dnsperf's rate (default 20,000: what a debug build on a loaded CI
//! machine sustains); issue 20's figure is `NDOTS_UPDATE_QPS=60000` on a release build
//! (benches/README.md).

mod common;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use common::proxy::proxy_command;
use common::tools::{free_port, require, Dnsperf, Proc};
use common::upstream::{Rec, Upstream};

/// dnsperf's rate for these tests (`NDOTS_UPDATE_QPS`).
fn rate() -> u64 {
    std::env::var("NDOTS_UPDATE_QPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// An upstream with 50 names, and the query file naming them.
fn upstream_and_queries(dir: &std::path::Path) -> (Upstream, String) {
    let up = Upstream::start();
    for i in 0..50 {
        up.add(
            &format!("svc-{i}.default.svc.cluster.local."),
            1,
            Rec::A(Ipv4Addr::new(10, 96, 0, i as u8 + 1), 300),
        );
    }
    let qf = dir.join("q.txt");
    std::fs::write(
        &qf,
        (0..50)
            .map(|i| format!("svc-{i}.default.svc.cluster.local A\n"))
            .collect::<String>(),
    )
    .unwrap();
    (up, qf.to_string_lossy().into_owned())
}

/// dnsperf at `rate()` for `secs` against 127.0.0.1:`port`, from 4 clients.
fn dnsperf(port: u16, queries: &str, secs: u64) -> std::process::Child {
    let (p, l, q) = (port.to_string(), secs.to_string(), rate().to_string());
    Dnsperf::command(
        &[
            "-s",
            "127.0.0.1",
            "-p",
            &p,
            "-d",
            queries,
            "-l",
            &l,
            "-Q",
            &q,
            "-c",
            "4",
            "-t",
            "2",
        ],
        None,
    )
    .spawn()
    .unwrap()
}

#[test]
fn sigterm_during_load_loses_no_query() {
    if !require("dnsperf") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (up, queries) = upstream_and_queries(dir.path());
    let port = free_port();
    let start = || {
        proxy_command(port, up.addr, "127.0.0.1:0")
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut old = start();
    std::thread::sleep(Duration::from_millis(300));
    let mut new = start();
    std::thread::sleep(Duration::from_millis(300));

    let perf = dnsperf(port, &queries, 10);
    std::thread::sleep(Duration::from_secs(5));
    unsafe { libc::kill(old.id() as i32, libc::SIGTERM) };
    let status = old.wait().unwrap();
    assert!(
        status.success(),
        "the old proxy exits cleanly after draining: {status:?}"
    );
    let out = perf.wait_with_output().unwrap();
    let _ = new.kill();
    let _ = new.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let Dnsperf { sent, lost, .. } = Dnsperf::parse(&text);
    assert!(sent > rate() * 10 / 2, "dnsperf sent {sent}");
    assert_eq!(lost, 0, "queries lost during the update");
}

/// Issue 20: the rolling update as the kubelet runs it with `maxSurge: 1`, twice under load: a newcomer
/// starts on the same DNS and admin ports, announces itself once ready, the previous process
/// drains and waits, and only then gets its SIGTERM. dnsperf runs across both updates. The
/// second update found the bug: a process that had come in as a newcomer declined every later
/// hand-over, so the next update split queries, probes and scrapes until its SIGTERM.
#[test]
fn a_newcomer_declined_the_next_updates_handover() {
    if !require("dnsperf") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (up, queries) = upstream_and_queries(dir.path());
    let (port, admin) = (free_port(), free_port());
    let spawn = |name: &str| {
        let log = std::fs::File::create(dir.path().join(name)).unwrap();
        let child = proxy_command(port, up.addr, &format!("127.0.0.1:{admin}"))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Proc(child)
    };
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    // Until `name`'s log says it drained after the hand-over.
    let handed_over = |name: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !log(name).contains("handed over and drained") {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} did not hand over:\n{}",
                log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = spawn("first.log");
    std::thread::sleep(Duration::from_millis(500));
    let perf = dnsperf(port, &queries, 12);
    std::thread::sleep(Duration::from_secs(2));
    // Update 1: second surges, first hands over, drains, and is stopped.
    let mut second = spawn("second.log");
    handed_over("first.log");
    std::thread::sleep(Duration::from_secs(1));
    assert!(first.terminate(), "{}", log("first.log"));
    std::thread::sleep(Duration::from_secs(2));
    // Update 2: the same from the second to a third.
    let third = spawn("third.log");
    handed_over("second.log");
    std::thread::sleep(Duration::from_secs(1));
    assert!(second.terminate(), "{}", log("second.log"));
    let out = perf.wait_with_output().unwrap();
    drop(third);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    let Dnsperf {
        sent,
        completed,
        lost,
        ..
    } = Dnsperf::parse(&text);
    assert!(sent > rate() * 12 / 2, "dnsperf sent {sent}");
    assert_eq!(
        lost,
        0,
        "queries lost across two updates ({completed} of {sent} answered)\n\
         first:\n{}\nsecond:\n{}\nthird:\n{}",
        log("first.log"),
        log("second.log"),
        log("third.log")
    );
}
