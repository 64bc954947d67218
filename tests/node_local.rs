//! The node-local address (issue 7; issue 8 item 5), in a private network namespace: the proxy
//! creates the link, its addresses and the NOTRACK table itself; it answers on the addresses;
//! a clean restart and a crash-restart loop (kill -9, five times) keep the addresses, and an
//! `ip monitor` running through all of it never sees one deleted. Last, a link deleted under a
//! running proxy (another cache's teardown) is put back and the proxy answers on it again.
//!
//! Issue 17, once per iptables backend (legacy, nft): on a node whose INPUT policy is DROP (v4
//! and v6, replies to the node's own connections accepted), the proxy without its firewall
//! rules is unreachable (the control), with them answers on 169.254.20.10 and fd00::10, to a
//! client on the node and to a pod in a namespace of its own behind a veth; after
//! `nft flush ruleset` and after a rule deleted by hand the reconciler puts the NOTRACK table
//! and the rules back, once; `ndots node-local teardown` leaves no link, address, table or rule
//! of ours and every rule of the node's.
//!
//! `server.udp_segmentation` on a node's paths to a pod (NOTRACK v4 and v6, a ClusterIP
//! DNAT'ed by conntrack): pipelined answers leave as segmented sends and each reaches the pod
//! as the datagram it was; a capture on the veth holds the merged packets, and `ndots analyze`
//! counts every query and answer in it.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::netns;
use common::upstream::{Rec, Upstream};

const V4: &str = "169.254.20.10";
const V6: &str = "fd00::10";
const LINK: &str = "nodelocaldns";
const NAME: &str = "kube-dns.kube-system.svc.cluster.local.";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A record for NAME as `dig` gets it from `server`, or None.
fn dig(server: &str) -> Option<String> {
    let out = Command::new("dig")
        .args([
            "+short",
            "+tries=1",
            "+time=1",
            &format!("@{server}"),
            NAME,
            "A",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty() && !text.starts_with(";;")).then_some(text)
}

/// Poll (bounded) until the proxy answers on `server`.
fn answers(server: &str) -> Option<String> {
    (0..100).find_map(|_| {
        dig(server).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    })
}

fn addresses_on_link() -> String {
    run("ip", &["-o", "addr", "show", "dev", LINK])
}

fn assert_addresses_present(when: &str) {
    let a = addresses_on_link();
    assert!(
        a.contains(&format!("{V4}/32")) && a.contains(&format!("{V6}/128")),
        "{when}: the node-local addresses must be on {LINK}:\n{a}"
    );
}

fn notrack_rules() -> usize {
    run("nft", &["list", "table", "inet", "ndots"])
        .lines()
        .filter(|l| l.contains("notrack"))
        .count()
}

/// A proxy process, killed if the test fails while it runs.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proxy {
    fn sigterm(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().unwrap()
    }

    fn sigkill(&mut self) {
        self.0.kill().unwrap(); // SIGKILL: no chance to clean anything up
        self.0.wait().unwrap();
    }
}

fn start_proxy(config: &Path, log: &Path) -> Proxy {
    Proxy(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--config"])
            .arg(config)
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Write a node-local proxy's config to `path`: `upstream`, the node-local addresses with
/// NOTRACK, an admin listener on a free port (returned), and `extra` (its own lines).
fn node_local_config(
    path: &Path,
    upstream: std::net::SocketAddr,
    extra: &str,
) -> std::net::SocketAddr {
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", common::tools::free_port())
        .parse()
        .unwrap();
    std::fs::write(
        path,
        format!(
            "upstreams: [{{zone: ., servers: [\"{upstream}\"]}}]\nadmin: \"{admin}\"\n{extra}\
             node_local:\n  enabled: true\n  kind: {}\n  addresses: [\"{V4}\", \"{V6}\"]\n  \
             notrack: true\n",
            link_kind()
        ),
    )
    .unwrap();
    admin
}

/// `dummy` as NodeLocal DNSCache uses, where the kernel has it; a port-less bridge otherwise
/// (some VM kernels are built without CONFIG_DUMMY).
fn link_kind() -> &'static str {
    let probe = Command::new("ip")
        .args(["link", "add", "ndotsprobe", "type", "dummy"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if probe {
        run("ip", &["link", "del", "ndotsprobe"]);
        "dummy"
    } else {
        eprintln!("this kernel has no dummy links: testing node_local.kind: bridge");
        "bridge"
    }
}

struct Monitor {
    child: Child,
    out: PathBuf,
}

impl Monitor {
    /// `ip monitor address`, known to be listening before this returns: it must report a probe
    /// address added on lo.
    fn start(dir: &Path) -> Monitor {
        let out = dir.join("monitor.txt");
        let child = Command::new("ip")
            .args(["monitor", "address"])
            .stdout(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap();
        let m = Monitor { child, out };
        let mut seen = false;
        for i in 0..50 {
            let probe = format!("192.0.2.{}/32", 100 + i);
            run("ip", &["addr", "add", &probe, "dev", "lo"]);
            std::thread::sleep(Duration::from_millis(100));
            if m.text().contains(&probe) {
                seen = true;
                break;
            }
        }
        assert!(seen, "ip monitor never reported the probe address");
        m
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_local_address_survives_restarts_and_crash_loops() {
    let Some(ns) = netns::enter("node_local_address_survives_restarts_and_crash_loops") else {
        return;
    };
    for tool in ["dig", "nft", "ip"] {
        if netns::which(tool).is_none() {
            netns::skip_or_fail(&format!(
                "{tool} is not installed (scripts/deps/deploy.txt)"
            ));
            return;
        }
    }
    let up = Upstream::start();
    up.add(NAME, 1, Rec::A(Ipv4Addr::new(10, 96, 0, 10), 1));
    let dir = ns.scratch();
    let config = dir.join("node-local.yaml");
    let admin = node_local_config(
        &config,
        up.addr,
        "server: {workers: 1, shutdown_grace: 1s}\n",
    );
    let log = dir.join("proxy.log");
    let monitor = Monitor::start(dir);
    assert!(
        Command::new("ip")
            .args(["link", "show", LINK])
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap(),
        "no {LINK} link before the proxy runs"
    );

    // First start: the proxy creates the link, the addresses and the table, and answers.
    let mut proxy = start_proxy(&config, &log);
    let first = answers(V4);
    assert_eq!(
        first.as_deref(),
        Some("10.96.0.10"),
        "the proxy answers on {V4}; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(answers(V6).as_deref(), Some("10.96.0.10"));
    assert_addresses_present("after the first start");
    assert!(
        run("ip", &["-o", "link", "show", LINK]).contains("UP"),
        "the link is up"
    );
    // Per address: UDP and TCP, to the address in prerouting and output, from it in output.
    assert_eq!(notrack_rules(), 2 * 2 * 3, "the NOTRACK table");
    let ruleset = run("nft", &["list", "ruleset"]);
    assert!(
        ruleset.contains(&format!("ip daddr {V4} udp dport 53 notrack"))
            && ruleset.contains(&format!("ip6 saddr {V6} tcp sport 53 notrack")),
        "{ruleset}"
    );

    // A clean stop (SIGTERM, as in a rolling update) leaves everything in place.
    assert!(proxy.sigterm().success(), "clean exit on SIGTERM");
    assert_addresses_present("after SIGTERM");
    assert_eq!(notrack_rules(), 12, "the table stays after exit");

    // A crash-restart loop: each restart finds the link and addresses, answers again, and
    // replaces the table instead of adding a second copy of its rules.
    for round in 1..=5 {
        proxy = start_proxy(&config, &log);
        assert_eq!(
            answers(V4).as_deref(),
            Some("10.96.0.10"),
            "round {round}: the restarted proxy answers on {V4}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_addresses_present(&format!("round {round}, running"));
        assert_eq!(notrack_rules(), 12, "round {round}: one copy of the rules");
        proxy.sigkill();
        assert_addresses_present(&format!("round {round}, right after kill -9"));
    }
    proxy = start_proxy(&config, &log);
    assert_eq!(answers(V4).as_deref(), Some("10.96.0.10"), "after the loop");
    proxy.sigkill();

    // The monitor saw the addresses appear (it was listening) and never saw one go.
    let events = monitor.text();
    drop(monitor);
    assert!(
        events.contains(&format!("{V4}/32")),
        "the monitor saw {V4} added:\n{events}"
    );
    let deleted: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("Deleted") && (l.contains(V4) || l.contains(V6)))
        .collect();
    assert!(
        deleted.is_empty(),
        "a node-local address disappeared: {deleted:?}"
    );
    assert!(up.count(NAME, 1) >= 1, "answers came from the upstream");

    // Something else tears the link down (NodeLocal DNSCache does on exit, e.g. while being
    // replaced by ndots): the running proxy puts it back, and its listeners, still bound to
    // the addresses, answer again.
    proxy = start_proxy(&config, &log);
    assert_eq!(answers(V4).as_deref(), Some("10.96.0.10"));
    run("ip", &["link", "del", LINK]);
    let back = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        Command::new("ip")
            .args(["-o", "addr", "show", "dev", LINK])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{V4}/32")))
            .unwrap_or(false)
    });
    assert!(
        back,
        "the proxy restores a removed link; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_addresses_present("after the link was deleted under the running proxy");
    assert_eq!(answers(V4).as_deref(), Some("10.96.0.10"), "answers again");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("restored"),
        "the restoration is logged"
    );
    // And counted: the link and both its addresses.
    let metrics = common::tools::http_get(admin, "/metrics").unwrap().1;
    let count = |what: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "ndots_node_local_restores_total{{what=\"{what}\"}}"
                ))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("link"), 1.0, "{metrics}");
    assert_eq!(count("address"), 2.0, "{metrics}");
    assert!(proxy.sigterm().success());
}

// ---- Issue 17: hardened nodes (INPUT policy DROP), reconciliation, teardown.

/// `iptables-legacy` / `ip6tables-nft` ...: the backend's command for a family.
fn ipt(backend: &str, v6: bool, args: &[&str]) -> String {
    let cmd = format!("{}-{backend}", if v6 { "ip6tables" } else { "iptables" });
    run(&cmd, args)
}

/// What a security team does to a node: INPUT policy DROP (v4 and v6) with only replies to
/// the node's own connections accepted, plus the one service it offers (here the stand-in for
/// the cluster DNS, which on a real node is elsewhere and answers as ESTABLISHED).
fn harden(backend: &str, upstream_port: u16) {
    for v6 in [false, true] {
        ipt(backend, v6, &["-P", "INPUT", "DROP"]);
        // Makes the OUTPUT chain exist under iptables-nft too (it creates chains on first use).
        ipt(backend, v6, &["-P", "OUTPUT", "ACCEPT"]);
        ipt(
            backend,
            v6,
            &[
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
    }
    // Neighbour discovery: without it no IPv6 packet reaches a neighbour at all, and every
    // real IPv6 ruleset admits it (RFC 4890 §4.4.1).
    ipt(
        backend,
        true,
        &["-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"],
    );
    let port = upstream_port.to_string();
    for proto in ["udp", "tcp"] {
        ipt(
            backend,
            false,
            &["-A", "INPUT", "-p", proto, "--dport", &port, "-j", "ACCEPT"],
        );
    }
}

/// Lines of `-S` output that mention the address: our rules in that backend and family.
fn rules_for(backend: &str, v6: bool, addr: &str) -> usize {
    ipt(backend, v6, &["-S"])
        .lines()
        .filter(|l| l.contains(addr))
        .count()
}

/// The NOTRACK rules, 0 while the table is missing.
fn notrack_rules_now() -> usize {
    Command::new("nft")
        .args(["list", "table", "inet", "ndots"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("notrack"))
                .count()
        })
        .unwrap_or(0)
}

/// Poll (bounded: 15 s, the reconciler runs every 2 s) until `f` holds.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    (0..150).any(|_| {
        let ok = f();
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    })
}

/// Wait until the proxy logged that it serves (it cannot be asked: the node drops the query).
fn wait_serving(log: &Path) {
    assert!(
        eventually(|| std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("ndots proxy serving")),
        "the proxy never started serving; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A pod as a CNI plugin sets one up: a network namespace of its own behind a veth pair,
/// default routes through the node (documentation addresses, inside the test's namespace).
fn make_pod() {
    // `ip netns` names live in /run/netns: a tmpfs of this mount namespace keeps the name
    // private to the test (tests run in parallel).
    std::fs::create_dir_all("/run/netns").unwrap();
    run("mount", &["-t", "tmpfs", "ndots-test", "/run/netns"]);
    run("ip", &["netns", "add", "pod"]);
    run(
        "ip",
        &[
            "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", "pod",
        ],
    );
    run("ip", &["addr", "add", "198.51.100.1/24", "dev", "vpod"]);
    run(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "vpod",
            "nodad",
        ],
    );
    run("ip", &["link", "set", "vpod", "up"]);
    let in_pod = |args: &[&str]| {
        let mut all = vec!["netns", "exec", "pod", "ip"];
        all.extend_from_slice(args);
        run("ip", &all);
    };
    in_pod(&["link", "set", "lo", "up"]);
    in_pod(&["addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    in_pod(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    in_pod(&["link", "set", "eth0", "up"]);
    in_pod(&["route", "add", "default", "via", "198.51.100.1"]);
    in_pod(&["-6", "route", "add", "default", "via", "2001:db8:1::1"]);
}

/// `dig` from the pod's namespace: its packets reach the node through the veth, as a pod's do.
fn pod_dig(server: &str) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", "pod", "dig", "+short", "+tries=1", "+time=1",
        ])
        .arg(format!("@{server}"))
        .args([NAME, "A"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty() && !text.starts_with(";;")).then_some(text)
}

fn pod_answers(server: &str) -> Option<String> {
    (0..30).find_map(|_| {
        pod_dig(server).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    })
}

fn hardened_node(test: &str, backend: &str) {
    let Some(ns) = netns::enter(test) else {
        return;
    };
    let tools = [
        "setpriv".to_string(),
        "dig".to_string(),
        "nft".into(),
        "ip".into(),
        format!("iptables-{backend}"),
        format!("ip6tables-{backend}"),
    ];
    for tool in &tools {
        if netns::which(tool).is_none() {
            netns::skip_or_fail(&format!(
                "{tool} is not installed (scripts/deps/deploy.txt)"
            ));
            return;
        }
    }
    let up = Upstream::start();
    up.add(NAME, 1, Rec::A(Ipv4Addr::new(10, 96, 0, 10), 1));
    harden(backend, up.addr.port());
    make_pod();
    let dir = ns.scratch();
    let config = dir.join("node-local.yaml");
    let log = dir.join("proxy.log");
    let write_config = |firewall: Option<bool>| {
        let fw = firewall
            .map(|f| format!("  firewall: {f}\n"))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "upstreams: [{{zone: ., servers: [\"{}\"]}}]\nadmin: \"127.0.0.1:0\"\n\
                 server: {{workers: 1, shutdown_grace: 1s}}\n\
                 allow: [127.0.0.0/8, 169.254.0.0/16, 192.0.2.0/24, 198.51.100.0/24, \
                 \"::1/128\", \"fd00::/8\", \"2001:db8::/32\"]\n\
                 node_local:\n  enabled: true\n  kind: {}\n  addresses: [\"{V4}\", \"{V6}\"]\n  \
                 notrack: true\n{fw}",
                up.addr,
                link_kind()
            ),
        )
        .unwrap();
    };

    // The proxy runs with the DaemonSet's capabilities only (NET_ADMIN, NET_BIND_SERVICE):
    // nothing here may need more, CAP_NET_RAW included.
    let start_proxy = |config: &Path, log: &Path| {
        Proxy(
            Command::new("setpriv")
                .args([
                    "--bounding-set",
                    "-all,+net_admin,+net_bind_service",
                    "--",
                    env!("CARGO_BIN_EXE_ndots"),
                    "proxy",
                    "--config",
                ])
                .arg(config)
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    // Without the firewall rules the hardened node drops DNS to the node-local addresses:
    // the control that shows the rules below are what makes it answer.
    write_config(Some(false));
    let mut proxy = start_proxy(&config, &log);
    wait_serving(&log);
    assert_eq!(dig(V4), None, "the hardened node must drop DNS to {V4}");
    assert_eq!(dig(V6), None, "the hardened node must drop DNS to {V6}");
    assert_eq!(pod_dig(V4), None, "and a pod's DNS to {V4}");
    assert_eq!(pod_dig(V6), None, "and a pod's DNS to {V6}");
    assert_eq!(rules_for(backend, false, V4), 0);
    assert!(proxy.sigterm().success());

    // With them (the default), it answers on both addresses.
    write_config(None);
    proxy = start_proxy(&config, &log);
    assert_eq!(
        answers(V4).as_deref(),
        Some("10.96.0.10"),
        "{backend}: the proxy answers on {V4} behind INPUT DROP; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(answers(V6).as_deref(), Some("10.96.0.10"), "and on {V6}");
    // To a pod too: the query arrives on the veth (INPUT), the answer leaves by it (OUTPUT).
    assert_eq!(
        pod_answers(V4).as_deref(),
        Some("10.96.0.10"),
        "a pod, {V4}"
    );
    assert_eq!(
        pod_answers(V6).as_deref(),
        Some("10.96.0.10"),
        "a pod, {V6}"
    );
    // INPUT and OUTPUT, to and from the address, UDP and TCP: 8 per family, once each.
    assert_eq!(
        rules_for(backend, false, V4),
        8,
        "{}",
        ipt(backend, false, &["-S"])
    );
    assert_eq!(
        rules_for(backend, true, V6),
        8,
        "{}",
        ipt(backend, true, &["-S"])
    );
    assert!(ipt(backend, false, &["-S", "INPUT"]).lines().any(|l| l
        .starts_with(&format!("-A INPUT -d {V4}/32 -p udp -m udp --dport 53"))
        && l.ends_with("-j ACCEPT")));

    // Something flushes nftables (a firewall reload, an administrator): the reconciler puts
    // the NOTRACK table back and, where the flush took the iptables-nft tables with it and the
    // hardening is loaded again, our ACCEPT rules.
    run("nft", &["flush", "ruleset"]);
    if backend == "nft" {
        // Checked before the hardening is back: until the chains exist again, the
        // reconciler has nowhere to put the rules.
        assert_eq!(
            rules_for(backend, false, V4),
            0,
            "the flush took our rules too"
        );
        harden(backend, up.addr.port());
    }
    assert!(
        eventually(|| notrack_rules_now() == 12),
        "the NOTRACK table is restored after nft flush ruleset; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        eventually(|| rules_for(backend, false, V4) == 8 && rules_for(backend, true, V6) == 8),
        "{backend}: the ACCEPT rules are restored:\n{}",
        ipt(backend, false, &["-S"])
    );
    // One rule deleted by hand comes back, and only that much: no duplicates.
    let one = ipt(backend, false, &["-S", "INPUT"])
        .lines()
        .find(|l| l.contains(V4) && l.contains("--dport 53") && l.contains("udp"))
        .expect("our UDP rule")
        .to_string();
    let mut del: Vec<&str> = one.split_whitespace().collect();
    del[0] = "-D";
    // `-S` quotes the comment; as separate arguments the quotes must go.
    let del: Vec<String> = del
        .iter()
        .map(|a| a.trim_matches('"').to_string())
        .collect();
    let del = rejoin_comment(&del);
    let del: Vec<&str> = del.iter().map(String::as_str).collect();
    // (`-D` exits non-zero unless it deleted the rule; checking the count here would race the
    // reconciler.)
    ipt(backend, false, &del);
    assert!(
        eventually(|| rules_for(backend, false, V4) == 8),
        "a deleted rule is put back"
    );
    std::thread::sleep(Duration::from_secs(3)); // another reconciler round changes nothing
    assert_eq!(rules_for(backend, false, V4), 8);
    assert_eq!(rules_for(backend, true, V6), 8);
    assert_eq!(answers(V4).as_deref(), Some("10.96.0.10"));
    assert_eq!(answers(V6).as_deref(), Some("10.96.0.10"));
    assert_eq!(pod_answers(V4).as_deref(), Some("10.96.0.10"));
    assert_eq!(pod_answers(V6).as_deref(), Some("10.96.0.10"));
    assert!(proxy.sigterm().success());
    // Exit removes nothing.
    assert_eq!(rules_for(backend, false, V4), 8);
    assert_addresses_present("after SIGTERM on a hardened node");

    // Teardown removes the link, its addresses, the table and our rules, and nothing else.
    let teardown = |config: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ndots"));
        cmd.args(["node-local", "teardown"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.output().unwrap()
    };
    let out = teardown(Some(&config));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("link nodelocaldns: removed"), "{said}");
    assert!(
        Command::new("ip")
            .args(["link", "show", LINK])
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap(),
        "no {LINK} link after teardown"
    );
    let addrs = run("ip", &["-o", "addr"]);
    assert!(!addrs.contains(V4) && !addrs.contains(V6), "{addrs}");
    assert!(
        !Command::new("nft")
            .args(["list", "table", "inet", "ndots"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "no NOTRACK table after teardown"
    );
    for v6 in [false, true] {
        let rules = ipt(backend, v6, &["-S"]);
        assert!(!rules.contains(V4) && !rules.contains(V6), "{rules}");
        // The node's own rules are untouched.
        assert!(rules.contains("-P INPUT DROP"), "{rules}");
        assert!(rules.contains("ESTABLISHED"), "{rules}");
    }
    assert!(!run("nft", &["list", "ruleset"]).contains("ndots"));
    // A second teardown (with the shipped configuration: no --config) finds nothing and says
    // so.
    let out = teardown(None);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("not there") && said.contains("firewall rules removed: 0"),
        "{said}"
    );
}

/// `-m comment --comment "a b c"` split on spaces back into one argument.
fn rejoin_comment(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--comment" {
            let mut words = Vec::new();
            i += 1;
            while i < args.len() && !args[i].starts_with('-') {
                words.push(args[i].clone());
                i += 1;
            }
            out.push("--comment".to_string());
            out.push(words.join(" "));
        } else {
            out.push(args[i].clone());
            i += 1;
        }
    }
    out
}

#[test]
fn hardened_node_iptables_legacy_answers_restores_and_tears_down() {
    hardened_node(
        "hardened_node_iptables_legacy_answers_restores_and_tears_down",
        "legacy",
    );
}

#[test]
fn hardened_node_iptables_nft_answers_restores_and_tears_down() {
    hardened_node(
        "hardened_node_iptables_nft_answers_restores_and_tears_down",
        "nft",
    );
}

/// A UDP socket in the pod's network namespace, connected to `to`: made on a thread that
/// enters the namespace (a network namespace is per thread), used from any thread after.
fn pod_socket(to: std::net::SocketAddr) -> std::net::UdpSocket {
    use std::os::fd::AsRawFd;
    std::thread::spawn(move || {
        let ns = std::fs::File::open("/run/netns/pod").unwrap();
        // SAFETY: moves only this thread into the namespace, by an fd we hold open.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = std::net::UdpSocket::bind(any).unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    })
    .join()
    .unwrap()
}

/// The proxy's `ndots_udp_segmented_sends_total` for `outcome`.
fn segmented_sends(admin: std::net::SocketAddr, outcome: &str) -> f64 {
    let (_, text) = common::tools::http_get(admin, "/metrics").expect("metrics");
    common::tools::metric_sum(
        &text,
        &format!("ndots_udp_segmented_sends_total{{outcome=\"{outcome}\"}}"),
    )
}

/// From a pod's socket (connected: only answers from `to` arrive), `COPIES` cached queries for
/// each name in one `sendmmsg`, as a forwarder or dnsperf pipelines them. Each must come back
/// once, as a datagram of its own: its ID, its question, the address, and the length of the
/// answer to one query asked alone (a datagram holding two answers, or cut, would differ).
/// Returns the queries sent.
fn pipelined_from_pod(
    sock: &std::net::UdpSocket,
    names: &[(String, Ipv4Addr)],
    id: &mut u16,
) -> usize {
    use ndots::wire;
    const COPIES: usize = 8;
    let mut buf = [0u8; 4096];
    let mut next_id = || {
        *id = id.wrapping_add(1).max(1);
        *id
    };
    let mut ask_alone = |name: &str, id: u16| {
        let mut q = Vec::new();
        wire::build_query(id, name, wire::TYPE_A, false, &mut q).unwrap();
        sock.send(&q).unwrap();
        let n = sock.recv(&mut buf).expect("an answer to one query");
        assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
        buf[..n].to_vec()
    };
    let mut expect = std::collections::HashMap::new();
    let mut queries = Vec::new();
    for (name, ip) in names {
        // The first may be a miss (answered off the listener thread); the second is the
        // cached answer the pipelined ones get.
        ask_alone(name, next_id());
        let alone = ask_alone(name, next_id());
        assert_eq!(common::dns::first_a(&alone), Some(*ip), "{name}");
        for _ in 0..COPIES {
            let id = next_id();
            let mut q = Vec::new();
            wire::build_query(id, name, wire::TYPE_A, false, &mut q).unwrap();
            expect.insert(id, (q[12..].to_vec(), alone.len(), *ip));
            queries.push(q);
        }
    }
    assert_eq!(common::dns::send_batch(sock, &queries), queries.len());
    while !expect.is_empty() {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!("{e}: {} of {} answers missing", expect.len(), queries.len())
        });
        let got = &buf[..n];
        let id = u16::from_be_bytes([got[0], got[1]]);
        let (question, len, ip) = expect
            .remove(&id)
            .unwrap_or_else(|| panic!("an answer with ID {id} not asked or twice"));
        assert_eq!(n, len, "ID {id}: one answer a datagram");
        // The query has no OPT: after its header, its question alone, which the answer repeats.
        assert_eq!(
            got.get(12..12 + question.len()),
            Some(&question[..]),
            "ID {id}"
        );
        assert_eq!(common::dns::first_a(got), Some(ip), "ID {id}");
    }
    sock.set_nonblocking(true).unwrap();
    assert!(
        sock.recv(&mut buf).is_err(),
        "a datagram more than the answers"
    );
    sock.set_nonblocking(false).unwrap();
    queries.len()
}

/// `server.udp_segmentation` on a node's real paths to a pod: answers leave the node-local
/// addresses (NOTRACK, v4 and v6) and a ClusterIP DNAT'ed by conntrack to the node's address
/// (as kube-proxy's iptables or nftables mode would), through the pod's veth. Each path must
/// carry segmented sends (the counter grows, none refused) and every pipelined answer arrives
/// as the datagram it was. `dumpcap` on the veth sees what a node's packet capture sees, and
/// `ndots analyze` must count every query and answer in it.
#[test]
fn segmented_answers_reach_a_pod_through_veth_notrack_and_dnat() {
    let test = "segmented_answers_reach_a_pod_through_veth_notrack_and_dnat";
    let Some(ns) = netns::enter(test) else {
        return;
    };
    for tool in ["nft", "ip", "dumpcap"] {
        if netns::which(tool).is_none() {
            netns::skip_or_fail(&format!("{tool} is not installed (scripts/deps)"));
            return;
        }
    }
    let up = Upstream::start();
    let names: Vec<(String, Ipv4Addr)> = (0..4u8)
        .map(|i| {
            let name = format!(
                "svc{}.{}ns.svc.cluster.local.",
                "x".repeat(i as usize * 5),
                i
            );
            let ip = Ipv4Addr::new(10, 0, 0, 10 + i);
            up.add(&name, 1, Rec::A(ip, 3600));
            (name, ip)
        })
        .collect();
    make_pod();
    // kube-proxy's part: the ClusterIP 10.96.0.10 DNAT'ed to the node's address on the veth.
    run(
        "nft",
        &["add table ip kubeproxy; \
             add chain ip kubeproxy pre { type nat hook prerouting priority -100; }; \
             add rule ip kubeproxy pre ip daddr 10.96.0.10 udp dport 53 dnat to 198.51.100.1:53"],
    );
    let dir = ns.scratch();
    let config = dir.join("segmentation.yaml");
    let log = dir.join("proxy.log");
    let admin = node_local_config(
        &config,
        up.addr,
        "listen: [\"198.51.100.1:53\"]\n\
         server: {workers: 1, shutdown_grace: 1s, udp_segmentation: true}\n\
         allow: [198.51.100.0/24, \"2001:db8::/32\"]\n",
    );
    let pcap = dir.join("veth.pcap");
    let dumpcap = common::tools::dumpcap("vpod", &pcap);
    let _proxy = start_proxy(&config, &log);
    wait_serving(&log);
    assert!(
        eventually(|| notrack_rules_now() > 0),
        "no NOTRACK rules; the proxy's log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut id = 0;
    let mut sent = 0;
    for (path, to) in [
        ("node-local v4, NOTRACK", format!("{V4}:53")),
        ("node-local v6, NOTRACK", format!("[{V6}]:53")),
        ("ClusterIP, DNAT and conntrack", "10.96.0.10:53".to_string()),
    ] {
        let sock = pod_socket(to.parse().unwrap());
        let before = segmented_sends(admin, "sent");
        // A burst the listener takes in several reads (it wakes at the first datagram) groups
        // less: one segmented send of 32 answers in a CI round. Rounds until one went, so that
        // this path carried segmented sends at all.
        for _ in 0..20 {
            sent += pipelined_from_pod(&sock, &names, &mut id) + 2 * names.len();
            if segmented_sends(admin, "sent") > before {
                break;
            }
        }
        let after = segmented_sends(admin, "sent");
        eprintln!("{path}: {} segmented sends", after - before);
        assert!(after > before, "{path}: no segmented send");
    }
    assert_eq!(segmented_sends(admin, "refused"), 0.0);
    common::tools::stop_dumpcap(dumpcap);

    // What the capture on the veth holds: every query and every answer, read by ndots.
    let report = common::tools::run_json(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["analyze", "--format", "json"])
            .arg(&pcap),
    );
    let input = &report["input"];
    let frames = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-Y", "dns.flags.response == 1"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    eprintln!("on the veth: {frames} frames with answers for {sent} answers; analyze: {input}");
    assert_eq!(input["queries"], sent as u64, "{input}");
    assert_eq!(input["responses"], sent as u64, "{input}");
    assert_eq!(input["unanswered"], 0, "{input}");
    assert_eq!(input["unmatched_responses"], 0, "{input}");
    assert_eq!(input["duplicates"], 0, "{input}");
}
