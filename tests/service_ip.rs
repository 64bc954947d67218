//! The upstream as a pod's sidecar (or any UDP zone) sees the cluster DNS: a Service IP, which
//! kube-proxy (iptables mode) turns into one endpoint per UDP flow with a DNAT rule, the choice
//! kept in conntrack while the flow lives. An endpoint whose node is gone stays in the Service
//! until the endpoints controller removes it (tens of seconds); meanwhile every datagram of a
//! flow mapped to it vanishes, with no ICMP error.
//!
//! Built here with the real pieces, in a private network namespace: nsd on two endpoint
//! addresses, the kube-proxy rules in the nat table (`statistic --mode nth`: new flows
//! alternate between the endpoints, so the test does not depend on a dice roll), and a drop
//! rule in INPUT that makes the second endpoint's node vanish. The proxy binary forwards to the
//! Service IP over UDP. Needs root (`CI=true` makes that a failure, not a skip).

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ndots::wire;

const SERVICE: &str = "10.96.0.10";
const ENDPOINTS: [&str; 2] = ["192.0.2.11", "192.0.2.12"];
const PROXY: &str = "127.0.0.1:53";
const ADMIN: &str = "127.0.0.1:9256";
const NAMES: usize = 1500;

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100 + (i / 250) as u8, (i % 250) as u8)
}

fn start_nsd(dir: &std::path::Path) -> std::process::Child {
    let mut zone = String::from(
        "$TTL 300\n@ 30 IN SOA ns.svc.test. hostmaster.svc.test. 1 7200 1800 86400 30\n\
         @ IN NS ns.svc.test.\nns IN A 192.0.2.11\n",
    );
    for i in 0..NAMES {
        zone += &format!("host{i} IN A {}\n", host_ip(i));
    }
    let listen: Vec<String> = ENDPOINTS.iter().map(|a| format!("{a}@53")).collect();
    common::nsd::spawn(dir, &listen, "svc.test", &zone)
}

/// `iptables` with `rule`'s words.
fn iptables(rule: &str) {
    sh("iptables", &rule.split_whitespace().collect::<Vec<_>>());
}

/// kube-proxy's rules for a UDP Service of two endpoints (iptables mode, reduced to what
/// decides the path of a datagram), new flows alternating between them.
fn kube_proxy_rules() {
    for ep in ENDPOINTS {
        sh("ip", &["addr", "add", &format!("{ep}/32"), "dev", "lo"]);
    }
    sh(
        "ip",
        &["route", "add", &format!("{SERVICE}/32"), "dev", "lo"],
    );
    iptables("-t nat -N KUBE-SVC-DNS");
    iptables(&format!(
        "-t nat -A OUTPUT -d {SERVICE} -p udp --dport 53 -j KUBE-SVC-DNS"
    ));
    iptables(&format!(
        "-t nat -A KUBE-SVC-DNS -p udp -m statistic --mode nth --every 2 --packet 0 \
         -j DNAT --to-destination {}:53",
        ENDPOINTS[0]
    ));
    iptables(&format!(
        "-t nat -A KUBE-SVC-DNS -p udp -j DNAT --to-destination {}:53",
        ENDPOINTS[1]
    ));
}

/// The node of the second endpoint is gone: what is sent there vanishes, with no ICMP error.
fn second_endpoint_vanishes() {
    iptables(&format!(
        "-A INPUT -d {} -p udp --dport 53 -j DROP",
        ENDPOINTS[1]
    ));
}

/// The ID, rcode and first address of an answer.
fn read_answer(msg: &[u8]) -> Option<(u16, u16, Option<Ipv4Addr>)> {
    let info = wire::parse_response(msg).ok()?;
    Some((info.header.id, info.rcode, common::dns::first_a(msg)))
}

/// Half of the proxy's upstream sockets mapped to an endpoint whose node is gone: each lost
/// its every datagram for as long as it lived (512 queries), every query on it waited a resend
/// (a round trip lost), and past the resend budget (10 a second plus a fifth of the queries)
/// the rest waited out the timeout and got SERVFAIL. A socket that loses its queries while the
/// server answers on the others is now replaced (a new source port, a new flow: kube-proxy
/// maps it afresh).
#[test]
fn a_socket_mapped_to_a_vanished_endpoint_kept_losing_its_queries() {
    let Some(ns) =
        common::netns::enter("a_socket_mapped_to_a_vanished_endpoint_kept_losing_its_queries")
    else {
        return;
    };
    if !common::tools::require("nsd") || !common::tools::require("iptables") {
        return;
    }
    let dir = ns.scratch().to_path_buf();
    kube_proxy_rules();
    let mut nsd = start_nsd(&dir);
    let cfg = dir.join("ndots.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [\"{PROXY}\"]\nadmin: \"{ADMIN}\"\nserver: {{workers: 1}}\n\
             cache: {{prefetch: false}}\n\
             upstreams: [{{zone: \".\", servers: [\"{SERVICE}:53\"], timeout: 2s}}]\n"
        ),
    )
    .unwrap();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .args(["proxy", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("proxy.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let admin: SocketAddr = ADMIN.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while common::tools::http_get(admin, "/readyz").map(|r| r.0) != Some(200) {
        if Instant::now() > deadline {
            let _ = proxy.kill();
            let _ = nsd.kill();
            panic!(
                "the proxy never became ready: {}",
                std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Both endpoints up: the proxy's sockets (two flows to each) learn the round trip.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    for i in 0..40u16 {
        let mut q = Vec::new();
        let name = format!("host{}.svc.test.", NAMES - 1 - i as usize);
        wire::build_query(i, &name, wire::TYPE_A, false, &mut q).unwrap();
        client.send_to(&q, PROXY).unwrap();
        let mut buf = [0u8; 1500];
        let n = client
            .recv(&mut buf)
            .expect("answered while both endpoints are up");
        assert_eq!(read_answer(&buf[..n]).map(|a| a.1), Some(0), "{name}");
    }
    second_endpoint_vanishes();

    // 300 new names a second for 5 s, each once; then time for the last to be answered.
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let receiver = {
        let client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = vec![None; NAMES];
            let mut buf = [0u8; 1500];
            let mut idle_since = Instant::now();
            while idle_since.elapsed() < Duration::from_secs(3) {
                if let Ok(n) = client.recv(&mut buf) {
                    idle_since = Instant::now();
                    if let Some((id, rcode, a)) = read_answer(&buf[..n]) {
                        if let Some(slot) = got.get_mut(id as usize) {
                            *slot = Some((rcode, a));
                        }
                    }
                }
            }
            got
        })
    };
    let start = Instant::now();
    for i in 0..NAMES {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / 300);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let mut q = Vec::new();
        wire::build_query(
            i as u16,
            &format!("host{i}.svc.test."),
            wire::TYPE_A,
            false,
            &mut q,
        )
        .unwrap();
        client.send_to(&q, PROXY).unwrap();
    }
    let got = receiver.join().unwrap();
    let (_, metrics) = common::tools::http_get(admin, "/metrics").unwrap();
    let _ = proxy.kill();
    let _ = nsd.kill();
    let _ = (proxy.wait(), nsd.wait());

    let to = format!("{SERVICE}:53");
    let lost = |reason: &str| {
        common::tools::metric_sum(
            &metrics,
            &format!("ndots_upstream_failures_total{{to=\"{to}\",reason=\"{reason}\"}}"),
        )
    };
    let (overtaken, timeouts) = (lost("overtaken"), lost("timeout"));
    let replaced = common::tools::metric_sum(
        &metrics,
        &format!("ndots_upstream_udp_replaced_total{{to=\"{to}\"}}"),
    );
    let servfail = got.iter().flatten().filter(|(r, _)| *r == 2).count();
    let failed: Vec<usize> = (0..NAMES)
        .filter(|&i| matches!(got[i], Some((2, _))))
        .collect();
    eprintln!("SERVFAIL for names {failed:?}");
    let unanswered = got.iter().filter(|g| g.is_none()).count();
    let wrong: Vec<usize> = (0..NAMES)
        .filter(|&i| matches!(got[i], Some((0, a)) if a != Some(host_ip(i))))
        .collect();
    eprintln!(
        "service ip, one endpoint vanished: {NAMES} names, {servfail} SERVFAIL, \
         {unanswered} unanswered, {} wrong; upstream attempts overtaken {overtaken}, \
         timed out {timeouts}; sockets replaced {replaced}",
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong addresses for {wrong:?}");
    // The two sockets mapped there at the start, and each replacement mapped there too.
    assert!(replaced >= 2.0, "sockets replaced: {replaced}");
    assert_eq!(unanswered, 0, "every name answered");
    // While the first sockets to the vanished endpoint (and their replacements, half of which
    // are mapped there too) lose their first few queries, their resends may exceed the resend
    // budget: a few names of the first second fail. None after it.
    assert!(
        failed.iter().all(|&i| i < 300) && servfail <= NAMES / 50,
        "SERVFAIL only while the sockets were being replaced: {failed:?}"
    );
    // Each attempt lost to a vanished flow is overtaken by its resend (or times out): a socket
    // goes after a few of those, so its replacement (half of them vanish too) costs a few more.
    assert!(
        overtaken + timeouts <= NAMES as f64 * 0.05,
        "sockets to the vanished endpoint were replaced: {overtaken} overtaken, {timeouts} timed out"
    );
}
