//! Small helpers the integration tests share: external tools, free ports, a tiny HTTP GET.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `have(tool)`, or else skip loudly (false) — or fail under `CI=true`, where
/// scripts/test.sh has installed everything.
pub fn require(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is required under CI=true (scripts/test.sh installs it)");
    }
    eprintln!("\n*** SKIPPED: {tool} is not installed; run scripts/test.sh as root ***\n");
    false
}

/// A port free on 127.0.0.1 for both UDP and TCP, below the kernel's ephemeral range, and not
/// given before in this process. It was an ephemeral port (a bind to port 0): between this
/// check and the server's own bind, any connect() may take it as its local port, the test's
/// own polling included, and a poll of a port nobody listens on yet can connect a socket to
/// itself (TCP simultaneous open). The server then failed to bind and exited, and the test
/// waited 10 s for a /healthz that never came (`cli_proxy`'s signal tests: once in CI, then
/// 2 runs in 5 right after it).
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let p = if ephemeral_low > 12_000 {
            rand::random_range(10_000..ephemeral_low)
        } else {
            // No room below the range: take an ephemeral port, as before.
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            u.local_addr().unwrap().port()
        };
        if given.contains(&p) {
            continue;
        }
        if UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            given.push(p);
            return p;
        }
    }
}

/// GET `path`; (status, body). Handles chunked bodies (Prometheus sends them).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// What one dnsperf run reports.
#[derive(Debug, Clone, Copy)]
pub struct Dnsperf {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub avg_latency_s: f64,
}

impl Dnsperf {
    /// Parse dnsperf's statistics block; panics naming the missing line.
    pub fn parse(text: &str) -> Dnsperf {
        let field = |label: &str| -> f64 {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .and_then(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("dnsperf output has no {label:?}:\n{text}"))
        };
        Dnsperf {
            sent: field("Queries sent") as u64,
            completed: field("Queries completed") as u64,
            lost: field("Queries lost") as u64,
            qps: field("Queries per second"),
            avg_latency_s: field("Average Latency (s)"),
        }
    }

    /// Run dnsperf with `args` to completion (e.g. `["-s", "127.0.0.1", "-p", "53", "-d",
    /// file, "-l", "5"]`), optionally pinned to `cpu` with taskset.
    pub fn run(args: &[&str], cpu: Option<usize>) -> Dnsperf {
        let out = Self::command(args, cpu).output().expect("dnsperf runs");
        let text = String::from_utf8_lossy(&out.stdout);
        Dnsperf::parse(&text)
    }

    pub fn command(args: &[&str], cpu: Option<usize>) -> Command {
        let mut c = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), "dnsperf"]);
                c
            }
            None => Command::new("dnsperf"),
        };
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }
}

/// The sum of the samples on lines of a Prometheus exposition that start with `prefix`
/// (e.g. `ndots_overload_drops_total{limit="max_inflight"`).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET `path` until it answers `status` with a body containing `want`, for at most `within`;
/// the body.
pub fn wait_http(
    addr: SocketAddr,
    path: &str,
    status: u16,
    want: &str,
    within: Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got = http_get(addr, path);
        if let Some((s, body)) = &got {
            if *s == status && body.contains(want) {
                return body.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} on {addr} never gave {status} {want:?} within {within:?}; last: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `promtool check metrics` accepts the exposition `text` (skipped loudly without promtool).
pub fn promtool_check_metrics(text: &str) {
    if !require("promtool") {
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    // promtool lints counters without `_total` and the like as warnings on stdout; the exit
    // status is what fails on a malformed exposition.
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `cmd` (an `ndots` subcommand with `--format json`) to its end; it must succeed, and its
/// stdout is the JSON returned.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A child process killed and reaped when the test ends, also when it fails.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM, and whether it then exits cleanly.
    pub fn terminate(&mut self) -> bool {
        self.signal(libc::SIGTERM);
        self.0.wait().unwrap().success()
    }

    /// Send `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with our own child's pid; it reads no memory of ours.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
}

/// `dumpcap` on `iface`, UDP port 53 only, writing a pcap to `file`; returns once it captures.
pub fn dumpcap(iface: &str, file: &std::path::Path) -> Child {
    let child = Command::new("dumpcap")
        .args(["-q", "-i", iface, "-P", "-f", "udp port 53", "-w"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dumpcap runs");
    let t = std::time::Instant::now();
    while std::fs::metadata(file).map_or(0, |m| m.len()) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "dumpcap wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file header is written when the capture is open; let the filter settle.
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// Stop dumpcap (SIGINT: it writes what it holds) and wait for it.
pub fn stop_dumpcap(mut child: Child) {
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}
