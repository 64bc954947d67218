//! `ndots collect` throughput (issue 18: at least 500,000 dnstap messages per second on one
//! core). Run pinned to one core so the sender, the receiver and the tracker share it:
//!
//!     taskset -c 1 cargo bench --bench collect
//!
//! 250,000 walks of pods under ndots:5 (query and response of each candidate: 8 CLIENT_*
//! messages a walk, 2,000,000 messages), pre-encoded, written by one bidirectional sender over a
//! unix socket to an in-process receiver feeding the tracker. The clock stops when the tracker
//! has taken every lookup. Prints messages per second of wall clock and of process CPU time.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ndots::amplify::Tracker;
use ndots::capture::dnstap::{
    control_frame, pb, CONTENT_TYPE, CONTROL_READY, CONTROL_START, CONTROL_STOP,
};
use ndots::collect::{self, Listen};
use ndots::config::{ClusterConfig, TrackerConfig};
use prost::Message as _;

const WALKS: u64 = 250_000;

fn frame(out: &mut Vec<u8>, query: bool, client: [u8; 4], dns: &[u8], t_us: u64) {
    use pb::message::Type::*;
    let (sec, nsec) = (t_us / 1_000_000, (t_us % 1_000_000) as u32 * 1000);
    let m = pb::Message {
        r#type: if query { ClientQuery } else { ClientResponse } as i32,
        socket_family: Some(1),
        socket_protocol: Some(1),
        query_address: Some(client.to_vec()),
        query_port: Some(40_000 + (client[3] as u32)),
        query_time_sec: Some(sec),
        query_time_nsec: Some(nsec),
        response_time_sec: (!query).then_some(sec),
        response_time_nsec: (!query).then_some(nsec + 200_000),
        query_message: query.then(|| dns.to_vec()),
        response_message: (!query).then(|| dns.to_vec()),
        ..Default::default()
    };
    let d = pb::Dnstap {
        identity: Some(b"coredns-0".to_vec()),
        r#type: pb::dnstap::Type::Message as i32,
        message: Some(m),
        ..Default::default()
    };
    out.extend_from_slice(&(d.encoded_len() as u32).to_be_bytes());
    d.encode(out).unwrap();
}

fn stream(t0: u64) -> Vec<u8> {
    let mut out = control_frame(CONTROL_START, Some(CONTENT_TYPE));
    let mut t = t0;
    for w in 0..WALKS {
        let client = [10, (w >> 16) as u8, (w >> 8) as u8, w as u8];
        let base = format!("svc{}.example.com", w % 5000);
        for (i, suffix) in [
            "team-a.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            "",
        ]
        .iter()
        .enumerate()
        {
            let mut q = Vec::new();
            let id = (w as u16).wrapping_mul(4).wrapping_add(i as u16);
            ndots::wire::build_query(id, &format!("{base}.{suffix}"), 1, false, &mut q).unwrap();
            let v = ndots::wire::parse_query(&q).unwrap();
            let mut r = Vec::new();
            let rcode = if suffix.is_empty() { 0 } else { 3 };
            ndots::wire::minimal_response(&q, &v, rcode, false, &mut r);
            frame(&mut out, true, client, &q, t);
            frame(&mut out, false, client, &r, t + 200);
            t += 4;
        }
    }
    out.extend(control_frame(CONTROL_STOP, None));
    out
}

fn cpu_time() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    ndots::metrics::install();
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let bytes = stream(t0);
    let messages = WALKS * 8;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bench.sock");
    let cluster = ClusterConfig::kubernetes("cluster.local");
    let tracker = Tracker::start_named(
        &cluster,
        &TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 200_000,
            namespace_series: 50,
        },
        "bench",
    );
    let c = collect::start(
        &Listen::Unix(sock.clone()),
        tracker.clone(),
        Default::default(),
    )
    .unwrap();
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.write_all(&control_frame(CONTROL_READY, Some(CONTENT_TYPE)))
        .unwrap();
    let mut accept = [0u8; 42];
    conn.read_exact(&mut accept[..8]).unwrap();
    let n = u32::from_be_bytes(accept[4..8].try_into().unwrap()) as usize;
    conn.read_exact(&mut accept[8..8 + n]).unwrap();
    conn.write_all(&bytes).unwrap();
    let mut finish = [0u8; 12];
    conn.read_exact(&mut finish).unwrap();
    tracker.sync(true);
    let wall = start.elapsed();
    let cpu = cpu_time() - cpu0;
    let r = tracker.report(None);
    assert_eq!(c.counters.frames.load(Relaxed), messages);
    assert_eq!(c.counters.malformed.load(Relaxed), 0);
    assert_eq!(r.lookups, WALKS, "every walk became one lookup");
    assert_eq!(r.dropped_events, 0);
    println!(
        "collect: {messages} dnstap messages ({} MB) -> {} lookups in {wall:.2?} wall, {cpu:.2?} CPU: \
         {:.0} k msgs/s wall, {:.0} k msgs/s CPU",
        bytes.len() / 1_000_000,
        r.lookups,
        messages as f64 / wall.as_secs_f64() / 1e3,
        messages as f64 / cpu.as_secs_f64() / 1e3,
    );
}
