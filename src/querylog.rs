//! `log.queries: true`: one line per answered query on stdout, in CoreDNS's `log` plugin format
//! (`{common}`, plugin/log README), so `ndots analyze` and every CoreDNS log tool read the
//! proxy's own traffic (DESIGN §9 "Logs"):
//!
//! `2026-12-01T10:00:00.123456Z [INFO] 10.0.0.5:40512 - 4242 "A IN web.default.svc.cluster.local. udp 58 false 512" NOERROR qr,rd,ra 74 0.000081s`
//!
//! The RFC 3339 time first is the time the answer was sent, as `kubectl logs --timestamps`
//! prefixes CoreDNS's lines; with the duration after it a reader gets the query's arrival
//! time to the microsecond.
//!
//! Lines are buffered per thread and written once per receive batch (`flush`), so the packet
//! path makes no write(2) per query.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::event::{qtype_name, rcode_name, Timestamp};

/// One answered query, as the log line needs it.
pub struct Entry<'a> {
    pub client: SocketAddr,
    pub id: u16,
    pub qtype: u16,
    pub qclass: u16,
    /// Lowercase, absolute.
    pub name: &'a str,
    pub proto: &'static str,
    /// The query's size in bytes.
    pub size: usize,
    pub dnssec_ok: bool,
    /// The largest answer the client takes: EDNS size or 512 over UDP, 65535 over TCP.
    pub bufsize: usize,
    pub rcode: u16,
    /// The answer's header flags (second 16-bit word).
    pub flags: u16,
    /// The answer's size in bytes.
    pub answer_size: usize,
    pub duration: Duration,
    /// When the answer was sent.
    pub at: Timestamp,
}

/// Append `e` as one line (with its newline) to `out`.
pub fn format(e: &Entry<'_>, out: &mut String) {
    format_rfc3339(e.at, out);
    out.push_str(" [INFO] ");
    match e.client {
        SocketAddr::V4(a) => {
            let _ = write!(out, "{}:{}", a.ip(), a.port());
        }
        SocketAddr::V6(a) => {
            let _ = write!(out, "[{}]:{}", a.ip(), a.port());
        }
    }
    let class = match e.qclass {
        1 => "IN".to_string(),
        3 => "CH".to_string(),
        4 => "HS".to_string(),
        255 => "ANY".to_string(),
        c => format!("CLASS{c}"),
    };
    let _ = write!(
        out,
        " - {} \"{} {} {} {} {} {} {}\" {} ",
        e.id,
        qtype_name(e.qtype),
        class,
        e.name,
        e.proto,
        e.size,
        e.dnssec_ok,
        e.bufsize,
        rcode_name(e.rcode),
    );
    // The flags as CoreDNS's `{>rflags}` prints them: set bits, in header order.
    let mut first = true;
    for (bit, name) in [
        (0x8000, "qr"),
        (0x0400, "aa"),
        (0x0200, "tc"),
        (0x0100, "rd"),
        (0x0080, "ra"),
        (0x0040, "z"),
        (0x0020, "ad"),
        (0x0010, "cd"),
    ] {
        if e.flags & bit != 0 {
            if !first {
                out.push(',');
            }
            out.push_str(name);
            first = false;
        }
    }
    if first {
        out.push('-');
    }
    let micros = e.duration.as_micros();
    let _ = writeln!(
        out,
        " {} {}.{:06}s",
        e.answer_size,
        micros / 1_000_000,
        micros % 1_000_000
    );
}

/// `2026-12-01T10:00:00.123456Z` (UTC, microseconds).
pub fn format_rfc3339(t: Timestamp, out: &mut String) {
    let secs = t.0 / 1_000_000;
    let micros = t.0 % 1_000_000;
    let (days, sod) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
}

/// Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Bytes buffered per thread before a write even without a flush.
const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    static BUF: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Buffer one line on this thread.
pub fn push(e: &Entry<'_>) {
    let full = BUF.with(|b| {
        let mut b = b.borrow_mut();
        format(e, &mut b);
        b.len() >= FLUSH_AT
    });
    if full {
        flush();
    }
}

/// Write this thread's buffered lines to stdout in one write. A failed write (stdout closed)
/// drops them: the query log never stalls the packet path.
pub fn flush() {
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        if b.is_empty() {
            return;
        }
        let _ = std::io::stdout().lock().write_all(b.as_bytes());
        b.clear();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::coredns_log;

    fn entry(name: &str) -> Entry<'_> {
        Entry {
            client: "10.0.0.5:40512".parse().unwrap(),
            id: 4242,
            qtype: 28,
            qclass: 1,
            name,
            proto: "udp",
            size: 58,
            dnssec_ok: false,
            bufsize: 1232,
            rcode: 3,
            flags: 0x8183,
            answer_size: 133,
            duration: Duration::from_micros(1_000_081),
            at: Timestamp(1_764_583_200_123_456),
        }
    }

    #[test]
    fn line_has_coredns_layout() {
        let mut s = String::new();
        format(&entry("web.example."), &mut s);
        assert_eq!(
            s,
            "2025-12-01T10:00:00.123456Z [INFO] 10.0.0.5:40512 - 4242 \"AAAA IN web.example. udp 58 false 1232\" NXDOMAIN qr,rd,ra 133 1.000081s\n"
        );
    }

    #[test]
    fn analyze_reads_the_line_back_with_the_query_time() {
        let mut s = String::new();
        format(&entry("web.example."), &mut s);
        let mut r = coredns_log::CorednsLogReader::new(std::io::Cursor::new(s.into_bytes()));
        use crate::capture::Reader;
        let e = r.next_item().unwrap().unwrap();
        assert_eq!(e.qname, "web.example.");
        assert_eq!((e.qtype, e.rcode), (28, Some(3)));
        assert_eq!(e.client_port, Some(40512));
        assert_eq!(e.latency, Some(Duration::from_micros(1_000_081)));
        // Sent at .123456, took 1.000081 s: asked at 09:59:59.123375.
        assert_eq!(e.time, Timestamp(1_764_583_200_123_456 - 1_000_081));
    }

    #[test]
    fn dates_round_trip_through_the_parser() {
        for t in [
            0u64,
            951_782_400_000_001,
            1_764_583_200_123_456,
            4_102_444_799_999_999,
        ] {
            let mut s = String::new();
            format_rfc3339(Timestamp(t), &mut s);
            assert_eq!(coredns_log::parse_rfc3339(&s), Some(Timestamp(t)), "{s}");
        }
    }
}
