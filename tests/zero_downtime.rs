//! Zero-downtime update (DESIGN §3, issue 7): two proxies share one address through
//! SO_REUSEPORT; dnsperf runs for 10 s against it and the first proxy gets SIGTERM in the
//! middle. The first drains (serves until its socket is empty, then closes) and no query is lost.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tools::{free_port, require, Dnsperf};
use common::upstream::{Rec, Upstream};

#[test]
fn sigterm_during_load_loses_no_query() {
    if !require("dnsperf") {
        return;
    }
    let up = Upstream::start();
    for i in 0..50 {
        up.add(
            &format!("svc-{i}.default.svc.cluster.local."),
            1,
            Rec::A(Ipv4Addr::new(10, 96, 0, i as u8 + 1), 300),
        );
    }
    let port = free_port();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args([
                "proxy",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                &up.addr.to_string(),
                "--admin",
                "127.0.0.1:0",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut old = start();
    std::thread::sleep(Duration::from_millis(300));
    let mut new = start();
    std::thread::sleep(Duration::from_millis(300));

    let dir = tempfile::tempdir().unwrap();
    let qf = dir.path().join("q.txt");
    std::fs::write(
        &qf,
        (0..50)
            .map(|i| format!("svc-{i}.default.svc.cluster.local A\n"))
            .collect::<String>(),
    )
    .unwrap();
    let q = qf.to_string_lossy();
    let p = port.to_string();
    let perf = Dnsperf::command(
        &[
            "-s",
            "127.0.0.1",
            "-p",
            &p,
            "-d",
            &q,
            "-l",
            "10",
            "-Q",
            "20000",
            "-c",
            "4",
            "-t",
            "2",
        ],
        None,
    )
    .spawn()
    .unwrap();
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
    assert!(sent > 100_000, "dnsperf sent {sent}");
    assert_eq!(lost, 0, "queries lost during the update");
}
