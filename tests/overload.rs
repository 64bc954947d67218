//! Overload (issue 8, item 2): twice the proxy's measured capacity for 60 s.
//! The proxy runs as it does in a Kubernetes pod with a CPU limit: pinned to one CPU and held
//! to half of it by a CFS quota (a cgroup), while the load generators run on the other CPU, so
//! the proxy, not the generator, is the bottleneck. dnsperf measures its capacity (closed loop);
//! an open-loop sender offers twice that. It must keep answering at about its capacity, keep its memory
//! bounded, count what it drops (`ndots_udp_receive_drops_total`: the kernel drops datagrams
//! when a listener's queue is full) and answer at its normal latency as soon as the load stops.
//!
//! The capacity is measured in the same run, so every check is a ratio of this machine to
//! itself. `NDOTS_BIN=target/release/ndots` runs it against the release build for figures.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tools::{free_port, http_get, require, Dnsperf};
use common::upstream::{Rec, Upstream};

/// The bound this test holds the proxy to. The cache holds 1,000 names and the proxy idles at
/// about 15 MiB; what grows under load is bounded by design: the kernel's receive queue (not
/// in RSS), `server.max_inflight` upstream queries, and the tracker's queue of 65,536 events.
const RSS_BOUND_KIB: u64 = 128 * 1024;
const NAMES: usize = 1000;
const OVERLOAD_FOR: Duration = Duration::from_secs(60);

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics").expect("metrics scrape");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Proxy {
    child: Child,
    admin: SocketAddr,
    _limit: CpuLimit,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup with a CFS CPU quota, as a pod's `resources.limits.cpu` makes (cgroup v2
/// `cpu.max`, or v1 `cpu.cfs_quota_us`). Removed on drop, once its process has exited.
struct CpuLimit {
    dir: std::path::PathBuf,
}

impl CpuLimit {
    /// `millicores` of CPU, for the process `pid` and every thread it has or makes.
    fn new(millicores: u64, pid: u32) -> CpuLimit {
        let name = format!("ndots-overload-{}", std::process::id());
        let period = 100_000u64;
        let quota = period * millicores / 1000;
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
        let dir = if std::fs::read_to_string(v2)
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
            let dir = std::path::Path::new("/sys/fs/cgroup").join(name);
            std::fs::create_dir_all(&dir).expect("creating a cgroup (v2)");
            std::fs::write(dir.join("cpu.max"), format!("{quota} {period}")).unwrap();
            dir
        } else {
            let dir = std::path::Path::new("/sys/fs/cgroup/cpu").join(name);
            std::fs::create_dir_all(&dir).expect("creating a cgroup (v1 cpu controller)");
            std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string()).unwrap();
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()).unwrap();
            dir
        };
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("moving the proxy");
        CpuLimit { dir }
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The proxy's CPU limit in this test: half a core.
const PROXY_MILLICORES: u64 = 500;

/// `NDOTS_BIN`, else a release build made after the last change under `src/` (scripts/test.sh
/// builds the static one, `target/static/...`, just before the tests), else the debug build.
fn proxy_binary() -> String {
    if let Ok(bin) = std::env::var("NDOTS_BIN") {
        return bin;
    }
    let debug = env!("CARGO_BIN_EXE_ndots");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut newest_source = None;
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                newest_source = newest_source.max(modified(&p));
            }
        }
    }
    [
        debug.replace("/debug/", "/static/x86_64-unknown-linux-gnu/release/"),
        debug.replace("/debug/", "/release/"),
    ]
    .into_iter()
    .find(|p| modified(std::path::Path::new(p)).is_some_and(|m| Some(m) >= newest_source))
    .unwrap_or_else(|| debug.into())
}

/// Queries waiting in the kernel for the proxy's UDP sockets on 127.0.0.1:`port` (the
/// `rx_queue` column of /proc/net/udp, in bytes).
fn queued_bytes(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()))
                .then(|| u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok())?
        })
        .sum()
}

fn start_proxy(port: u16, upstream: SocketAddr) -> Proxy {
    let bin = proxy_binary();
    eprintln!("proxy binary: {bin}");
    let admin_port = free_port();
    let child = Command::new("taskset")
        .args(["-c", "0", &bin, "proxy", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--upstream", &upstream.to_string(), "--admin"])
        .arg(format!("127.0.0.1:{admin_port}"))
        .stderr(Stdio::null())
        .spawn()
        .expect("proxy starts");
    let limit = CpuLimit::new(PROXY_MILLICORES, child.id());
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(admin, "/readyz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "proxy never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proxy {
        child,
        admin,
        _limit: limit,
    }
}

#[test]
fn twice_capacity_for_60s_keeps_answering_bounded_and_recovers_at_once() {
    if !require("dnsperf") || !require("taskset") {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the overload test needs root for its cgroup under CI=true");
        }
        eprintln!("\n*** SKIPPED: the overload test needs root (a cgroup CPU limit) ***\n");
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        panic!("this test pins the proxy and dnsperf to different CPUs: it needs two");
    }
    let up = Upstream::start();
    for i in 0..NAMES {
        up.add(
            &format!("svc-{i}.load.test."),
            1,
            Rec::A(
                Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250) as u8 + 1),
                3600,
            ),
        );
    }
    let port = free_port();
    let proxy = start_proxy(port, up.addr);
    let dir = tempfile::tempdir().unwrap();
    let qf = dir.path().join("q.txt");
    std::fs::write(
        &qf,
        (0..NAMES)
            .map(|i| format!("svc-{i}.load.test A\n"))
            .collect::<String>(),
    )
    .unwrap();
    let (q, p) = (qf.to_string_lossy().into_owned(), port.to_string());
    let base = ["-s", "127.0.0.1", "-p", &p, "-d", &q, "-t", "1"];
    let perf = |extra: &[&str]| Dnsperf::run(&[&base[..], extra].concat(), Some(1));

    // Warm the cache, then measure: capacity (closed loop) and latency at a light load.
    let warm = perf(&["-l", "2", "-Q", "5000"]);
    assert!(warm.completed > 0, "{warm:?}");
    assert_eq!(
        up.total_of_type(1),
        NAMES,
        "each name reached the upstream once"
    );
    let capacity = perf(&["-l", "5", "-c", "4", "-q", "500"]);
    let before = perf(&["-l", "3", "-Q", "1000"]);
    eprintln!("capacity {capacity:?}\nlight load before {before:?}");
    assert_eq!(before.lost, 0, "{before:?}");

    // RSS sampled every 200 ms while under load.
    let pid = proxy.child.id();
    let (stop, peak) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let drops_before = metric(proxy.admin, "ndots_udp_receive_drops_total");
    let answered_before = metric(proxy.admin, "ndots_dns_responses_total");
    let offered = 2.0 * capacity.qps;
    let sent = blast(
        SocketAddr::from(([127, 0, 0, 1], port)),
        offered,
        OVERLOAD_FOR,
        1,
    );
    let answered = (metric(proxy.admin, "ndots_dns_responses_total") - answered_before)
        / OVERLOAD_FOR.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let drops = metric(proxy.admin, "ndots_udp_receive_drops_total") - drops_before;
    let tracker_dropped = metric(proxy.admin, "ndots_tracker_dropped_events_total");
    let peak_kib = peak.load(Ordering::Relaxed);
    // The load is over once the queries already queued at the socket are answered.
    let stopped = Instant::now();
    while queued_bytes(port) > 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the socket queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let drained_in = stopped.elapsed();
    let after = perf(&["-l", "3", "-Q", "1000"]);
    let sent_rate = sent as f64 / OVERLOAD_FOR.as_secs_f64();
    eprintln!(
        "overload for {OVERLOAD_FOR:?}: offered {offered:.0}/s, sent {sent_rate:.0}/s, \
         answered {answered:.0}/s ({:.2} of capacity)\n\
         kernel drops counted {drops}, tracker events dropped {tracker_dropped}\n\
         peak RSS {peak_kib} KiB\nqueue drained {drained_in:?} after the load\n\
         light load after {after:?}",
        answered / capacity.qps
    );
    assert!(
        sent_rate > 1.8 * capacity.qps,
        "the load generator did not reach twice the capacity: sent {sent_rate:.0}/s, capacity {:.0}/s",
        capacity.qps
    );
    assert!(
        answered > 0.4 * capacity.qps,
        "under overload the proxy answered {answered:.0}/s, well below its capacity {:.0}/s",
        capacity.qps
    );
    assert!(
        drops > 0.0,
        "twice the capacity must drop, and the drops are counted"
    );
    assert!(
        drops <= sent as f64 - answered * OVERLOAD_FOR.as_secs_f64() + 1.0,
        "more drops counted ({drops}) than queries went unanswered"
    );
    assert!(
        peak_kib < RSS_BOUND_KIB,
        "peak RSS {peak_kib} KiB over the bound"
    );
    assert_eq!(after.lost, 0, "queries lost after the load: {after:?}");
    assert!(
        after.avg_latency_s < 3.0 * before.avg_latency_s + 0.002,
        "latency did not come back: {:.6}s after, {:.6}s before",
        after.avg_latency_s,
        before.avg_latency_s
    );
    assert_eq!(
        up.total_of_type(1),
        NAMES,
        "the load was served from the cache"
    );
}

/// An open-loop load generator: sends the test's queries to `to` at `rate` per second for
/// `duration` with sendmmsg(2), pinned to `cpu`, and never reads the answers (dnsperf, which
/// tracks every answer, cannot offer twice the proxy's capacity from one core). Returns the
/// number sent. The proxy's own counters say what it answered.
fn blast(to: SocketAddr, rate: f64, duration: Duration, cpu: usize) -> u64 {
    use std::os::fd::AsRawFd;
    std::thread::spawn(move || {
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        }
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(to).unwrap();
        // A small receive buffer: the answers are dropped by the kernel, unread.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4096);
        let mut packets: Vec<Vec<u8>> = (0..NAMES)
            .map(|i| {
                let mut q = Vec::new();
                ndots::wire::build_query(
                    i as u16,
                    &format!("svc-{i}.load.test."),
                    1,
                    false,
                    &mut q,
                )
                .unwrap();
                q
            })
            .collect();
        const BATCH: usize = 64;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut next = 0usize;
        while start.elapsed() < duration {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            if sent + BATCH as u64 > due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let mut iov: Vec<libc::iovec> = (0..BATCH)
                .map(|k| {
                    let p = &mut packets[(next + k) % NAMES];
                    libc::iovec {
                        iov_base: p.as_mut_ptr().cast(),
                        iov_len: p.len(),
                    }
                })
                .collect();
            // SAFETY: zeroed mmsghdrs, each pointing at one iovec of `iov` (alive for the call).
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = v;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
                next = (next + n as usize) % NAMES;
            }
        }
        sent
    })
    .join()
    .unwrap()
}
