//! CoreDNS `log` plugin lines (plugin/log README; `{common}` and `{combined}` formats).
//!
//! Layouts, from old to new (see `shared/data/README.md`):
//! - ≤ 1.2.5: `{remote}:{port} - [{when}] {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}`
//! - 1.2.6–1.6.2: the same after the logger's `2019-07-19T08:24:57.565Z [INFO] `, without `[{when}]`
//! - ≥ 1.6.3: `[INFO] 10.244.0.5:53211 - 38126 "A IN name. udp 58 false 512" NXDOMAIN qr,aa,rd 151 0.000123s`
//! - `{combined}` appends ` "{>opcode}"`.
//!
//! Wrappers, in any combination: `kubectl logs --timestamps` (RFC 3339 with nanoseconds),
//! `kubectl logs --prefix` (`[pod/NAME/CONTAINER] `), a log UI's epoch milliseconds + TAB, a
//! container-name prefix (`node-cache `).
//!
//! One line is one query *and* its answer: client, name, type, rcode and the duration (the
//! latency). CoreDNS writes the line when it answers, so the event time is the line's time minus
//! the duration. The answer count is not in the line (`answers: None`). A line without any
//! timestamp (≥ 1.6.3 without kubectl's) gets the last known time plus 1 µs per line, which keeps
//! the order of the log.
//!
//! Lines that are not log-plugin lines (other plugins, startup banners, `#` comments, blank) are
//! skipped and counted as such; a line shaped like a log-plugin line (`... - ... "...`) that does
//! not parse is unreadable.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::event::{qtype_from_name, rcode_from_name, AnswerSource, QueryEvent, Timestamp};

use super::{InputCounts, LineReader, Position, Reader, Unreadable};

pub struct CorednsLogReader<R> {
    lines: LineReader<R>,
    last_time: Timestamp,
    skipped: u64,
    truncated: u64,
}

impl<R: BufRead + Send> CorednsLogReader<R> {
    pub fn new(input: R) -> Self {
        CorednsLogReader {
            lines: LineReader::new(input),
            last_time: Timestamp(0),
            skipped: 0,
            truncated: 0,
        }
    }
}

impl<R: BufRead + Send> Reader for CorednsLogReader<R> {
    fn next_item(&mut self) -> Option<Result<QueryEvent, Unreadable>> {
        loop {
            let (line_no, line) = self.lines.next_line()?;
            let pos = Position::Line(line_no);
            let text = match line.text(pos) {
                Ok(t) => t,
                Err(u) => return Some(Err(u)),
            };
            let (mut e, time) = match parse_line(text) {
                // Another plugin's line is text; bytes a log never holds are damage.
                Parsed::NotALogLine if text.chars().any(|c| c.is_control() && c != '\t') => {
                    return Some(Err(Unreadable::new(pos, "control characters in the line")));
                }
                Parsed::NotALogLine | Parsed::NotALookup => {
                    self.skipped += 1;
                    continue;
                }
                Parsed::Bad(reason) => return Some(Err(Unreadable::new(pos, reason))),
                Parsed::Event(e, time) => (e, time),
                Parsed::Truncated(e, time) => {
                    self.truncated += 1;
                    (e, time)
                }
            };
            match time {
                Some(t) => {
                    self.last_time = t;
                    e.time = Timestamp(
                        t.0.saturating_sub(e.latency.map_or(0, |d| d.as_micros() as u64)),
                    );
                }
                None => {
                    self.last_time = Timestamp(self.last_time.0 + 1);
                    e.time = self.last_time;
                }
            }
            return Some(Ok(e));
        }
    }

    fn counters(&self, s: &mut InputCounts) {
        s.skipped += self.skipped;
        s.truncated += self.truncated;
    }
}

pub(crate) enum Parsed {
    NotALogLine,
    /// A log line of a message that is not a lookup's: another class (CHAOS `version.bind`)
    /// or opcode (`{combined}`'s NOTIFY, UPDATE).
    NotALookup,
    Bad(String),
    /// A UDP answer with TC set (flags `tc`): the query, read as not answered, at the time the
    /// line was written (the stub asks again over TCP).
    Truncated(QueryEvent, Option<Timestamp>),
    /// The event (time not yet set) and the time the line was written, when it says.
    Event(QueryEvent, Option<Timestamp>),
}

/// Strip the wrappers; returns the rest and the innermost timestamp found.
fn unwrap_line(mut s: &str) -> (&str, Option<Timestamp>) {
    let mut time = None;
    // Each wrapper at most a few times over: the loop ends when nothing more is stripped.
    for _ in 0..6 {
        let before = s.len();
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("node-cache ") {
            s = rest;
        }
        if let Some(rest) = strip_kubectl_prefix(s) {
            s = rest;
        }
        // Epoch milliseconds + TAB.
        if let Some(tab) = s.find('\t') {
            let head = &s[..tab];
            if (10..=16).contains(&head.len()) && head.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(ms) = head.parse::<u64>() {
                    time = Some(Timestamp(ms.saturating_mul(1000)));
                    s = &s[tab + 1..];
                }
            }
        }
        // RFC 3339 (kubectl --timestamps, or CoreDNS 1.2.6–1.6.2's logger).
        if let Some(sp) = s.find(' ') {
            if let Some(t) = parse_rfc3339(&s[..sp]) {
                time = Some(t);
                s = &s[sp + 1..];
            }
        }
        if let Some(rest) = s.strip_prefix("[INFO] ") {
            s = rest;
        }
        if s.len() == before {
            break;
        }
    }
    (s.trim_end(), time)
}

/// `kubectl logs --prefix`'s `[pod/NAME/CONTAINER] ` (the source of a line, when several
/// pods' logs are printed together, `-l k8s-app=kube-dns`).
fn strip_kubectl_prefix(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("[pod/")?;
    let (source, rest) = inner.split_once("] ")?;
    let (pod, container) = source.split_once('/')?;
    let name = |n: &str| !n.is_empty() && !n.contains([' ', '/', '[', ']']);
    (name(pod) && name(container)).then_some(rest)
}

/// Does this look like a log-plugin line (a client, ` - `, then a quoted question)?
pub fn looks_like_log_line(line: &str) -> bool {
    let (rest, _) = unwrap_line(line);
    shaped_like_log(rest)
}

fn shaped_like_log(rest: &str) -> bool {
    match rest.find(" - ") {
        Some(i) => !rest[..i].contains(' ') && rest[i..].contains('"'),
        None => false,
    }
}

pub(crate) fn parse_line(line: &str) -> Parsed {
    let (rest, mut time) = unwrap_line(line);
    if rest.is_empty() || rest.starts_with('#') || !shaped_like_log(rest) {
        return Parsed::NotALogLine;
    }
    let bad = |r: &str| Parsed::Bad(r.to_string());
    let Some((remote, rest)) = rest.split_once(" - ") else {
        return bad("no ' - ' after the client");
    };
    let Some((client, port)) = parse_remote(remote) else {
        return bad("client address is not an IP[:port]");
    };
    let mut rest = rest.trim_start();
    // Old `[{when}]`: dd/Mon/yyyy:HH:MM:SS +zzzz.
    if let Some(r) = rest.strip_prefix('[') {
        let Some((when, r)) = r.split_once(']') else {
            return bad("unclosed [time]");
        };
        match parse_clf_time(when) {
            Some(t) => time = Some(t),
            None => return bad("bad [time]"),
        }
        rest = r.trim_start();
    }
    let Some((id, r)) = rest.split_once(' ') else {
        return bad("no query ID");
    };
    if id != "-" && id.parse::<u16>().is_err() {
        return bad("query ID is not a number");
    }
    let Some(r) = r.trim_start().strip_prefix('"') else {
        return bad("no quoted question");
    };
    let Some((question, after)) = r.split_once('"') else {
        return bad("unclosed quoted question");
    };
    let mut q = question.split_ascii_whitespace();
    let (Some(qtype), Some(class), Some(name)) = (q.next(), q.next(), q.next()) else {
        return bad("question needs type, class and name");
    };
    if !class.eq_ignore_ascii_case("IN") {
        return Parsed::NotALookup;
    }
    let Some(qtype) = qtype_number(qtype) else {
        return bad("unknown query type");
    };
    let mut a = after.split_ascii_whitespace();
    let (Some(rcode), Some(flags), Some(_rsize), Some(duration)) =
        (a.next(), a.next(), a.next(), a.next())
    else {
        return bad("line ends before rcode, flags, size and duration");
    };
    let rcode = if rcode == "-" {
        None
    } else {
        match rcode_from_name(rcode) {
            Some(r) => Some(r),
            None => return bad("unknown rcode"),
        }
    };
    let Some(latency) = parse_go_duration(duration) else {
        return bad("bad duration");
    };
    // `{combined}`: a quoted opcode; anything else after the duration means another layout.
    if let Some(extra) = a.next() {
        if !(extra.starts_with('"')
            && extra.ends_with('"')
            && extra.len() >= 2
            && a.next().is_none())
        {
            return bad("unexpected text after the duration");
        }
        if !extra.eq_ignore_ascii_case("\"QUERY\"") {
            return Parsed::NotALookup;
        }
    }
    let qname = super::name_from_text(name);
    if flags.split(',').any(|f| f == "tc") {
        let e = QueryEvent {
            time: Timestamp(0),
            client,
            client_port: port,
            qname,
            qtype,
            rcode: None,
            answers: None,
            latency: Some(latency),
            source: Some(AnswerSource::Truncated),
        };
        return Parsed::Truncated(e, time);
    }
    Parsed::Event(
        QueryEvent {
            time: Timestamp(0),
            client,
            client_port: port,
            qname,
            qtype,
            rcode,
            answers: None,
            latency: Some(latency),
            source: rcode.map(|_| AnswerSource::Captured),
        },
        time,
    )
}

/// `ip:port`, `[v6]:port`, a bare IP, or a redacted address (`x.x.x.x`: reported as 0.0.0.0, so
/// an issue paste still counts; such clients cannot be told apart).
fn parse_remote(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(r) = s.strip_prefix('[') {
        let (ip, port) = r.split_once("]:")?;
        return Some((ip.parse().ok()?, Some(port.parse().ok()?)));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some((ip, Some(port)));
    }
    if !host.is_empty() && host.bytes().all(|b| matches!(b, b'x' | b'X' | b'.' | b'*')) {
        return Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(port)));
    }
    None
}

/// Type mnemonics as Go's miekg/dns prints them, beyond the common ones `event` knows.
fn qtype_number(s: &str) -> Option<u16> {
    qtype_from_name(s).or(match s.to_ascii_uppercase().as_str() {
        "NULL" => Some(10),
        "HINFO" => Some(13),
        "DNAME" => Some(39),
        "SSHFP" => Some(44),
        "NSEC" => Some(47),
        "NSEC3" => Some(50),
        "TLSA" => Some(52),
        "CDS" => Some(59),
        "SPF" => Some(99),
        "IXFR" => Some(251),
        "AXFR" => Some(252),
        "URI" => Some(256),
        _ => None,
    })
}

/// Go's `time.Duration.String()`: `0.000102235s`, `1.5ms`, `150µs`, `2m3.5s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e9 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Days from 1970-01-01 to a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checked all the way: a mangled date (year 66666, found by `cargo fuzz`) is no timestamp, not
/// an overflow.
fn to_ts(days: i64, h: u32, mi: u32, s: u32, micros: u64, offset_secs: i64) -> Option<Timestamp> {
    let time_of_day = i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(time_of_day)?
        .checked_sub(offset_secs)?;
    let secs = u64::try_from(secs).ok()?;
    Some(Timestamp(secs.checked_mul(1_000_000)?.checked_add(micros)?))
}

/// RFC 3339: `2019-01-24T16:18:08.501Z`, `2024-03-12T10:15:17.735020027Z`, `...+01:00`.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut pos = 19;
    let mut micros = 0u64;
    if b.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = &s[start..end];
        let mut digits: String = frac.chars().take(6).collect();
        while digits.len() < 6 {
            digits.push('0');
        }
        micros = digits.parse().ok()?;
        pos = end;
    }
    let offset = match &s[pos..] {
        "Z" | "z" => 0,
        o if o.len() == 6
            && (o.starts_with('+') || o.starts_with('-'))
            && o.get(3..4) == Some(":") =>
        {
            let hh: i64 = o.get(1..3)?.parse().ok()?;
            let mm: i64 = o.get(4..6)?.parse().ok()?;
            let v = hh * 3600 + mm * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    to_ts(
        days_from_civil(y as i64, mo, d),
        h,
        mi,
        se.min(59),
        micros,
        offset,
    )
}

/// Common Log Format time: `11/Jan/2019:19:57:57 +0000`.
pub fn parse_clf_time(s: &str) -> Option<Timestamp> {
    let (dt, zone) = s.split_once(' ')?;
    let mut p = dt.splitn(3, '/');
    let (d, mon, rest) = (p.next()?, p.next()?, p.next()?);
    let mut t = rest.split(':');
    let (y, h, mi, se) = (t.next()?, t.next()?, t.next()?, t.next()?);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let (d, y, h, mi, se): (u32, i64, u32, u32, u32) = (
        d.parse().ok()?,
        y.parse().ok()?,
        h.parse().ok()?,
        mi.parse().ok()?,
        se.parse().ok()?,
    );
    if !(1..=31).contains(&d)
        || !(1..=9999).contains(&y)
        || h > 23
        || mi > 59
        || se > 60
        || zone.len() != 5
    {
        return None;
    }
    // `get`, not indexing: a mangled zone may put a multi-byte character across the cut
    // (found by `cargo fuzz`).
    let zh: i64 = zone.get(1..3)?.parse().ok()?;
    let zm: i64 = zone.get(3..5)?.parse().ok()?;
    let off = match zone.get(..1)? {
        "+" => zh * 3600 + zm * 60,
        "-" => -(zh * 3600 + zm * 60),
        _ => return None,
    };
    to_ts(days_from_civil(y, mo, d), h, mi, se.min(59), 0, off)
}

/// Format one event as a CoreDNS ≥ 1.6.3 `log` line (used by `synth`); `id` is the DNS ID.
pub fn format_line(e: &QueryEvent, id: u16, out: &mut String) {
    use std::fmt::Write;
    let client = match e.client {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let rcode = e
        .rcode
        .map(crate::event::rcode_name)
        .unwrap_or(std::borrow::Cow::Borrowed("-"));
    let size = 17 + e.qname.len();
    let _ = writeln!(
        out,
        "[INFO] {}:{} - {} \"{} IN {} udp {} false 512\" {} qr,aa,rd {} {}s",
        client,
        e.client_port.unwrap_or(0),
        id,
        crate::event::qtype_name(e.qtype),
        e.qname,
        size,
        rcode,
        size + 16 * e.answers.unwrap_or(0) as usize + 93,
        e.latency.unwrap_or_default().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> (QueryEvent, Option<Timestamp>) {
        match parse_line(line) {
            Parsed::Event(e, t) => (e, t),
            Parsed::Bad(r) => panic!("bad: {r}: {line}"),
            Parsed::NotALogLine => panic!("not a log line: {line}"),
            Parsed::NotALookup => panic!("not a lookup: {line}"),
            Parsed::Truncated(..) => panic!("truncated: {line}"),
        }
    }

    /// Found by a probe: CoreDNS's line for `dig CH TXT version.bind` was a lookup, a
    /// truncated UDP answer (flags `tc`) an answer, and a line of binary garbage "skipped"
    /// like another plugin's text. Now skipped, read as no answer (counted), unreadable.
    #[test]
    fn chaos_lines_truncated_answers_and_binary_lines_were_read_as_lookups() {
        let log = format!(
            "{}\n{}\n{}\n{MODERN} \"NOTIFY\"\n\x01\x02\x7f garbage\n[INFO] plugin/reload: Running\n",
            r#"[INFO] 10.0.0.7:40001 - 2 "TXT CH version.bind. udp 41 false 512" NOERROR qr,aa,rd 72 0.0001s"#,
            r#"[INFO] 10.0.0.7:40002 - 3 "A IN big.example. udp 41 false 512" NOERROR qr,tc,rd 512 0.0002s"#,
            r#"[INFO] 10.0.0.7:40003 - 3 "A IN big.example. tcp 43 false 65535" NOERROR qr,rd 2100 0.0003s"#,
        );
        let mut r = CorednsLogReader::new(std::io::Cursor::new(log.into_bytes()));
        let mut events = Vec::new();
        let mut unreadable = 0;
        while let Some(item) = r.next_item() {
            match item {
                Ok(e) => events.push(e),
                Err(_) => unreadable += 1,
            }
        }
        let mut s = InputCounts::default();
        r.counters(&mut s);
        assert_eq!((s.skipped, s.truncated, unreadable), (3, 1, 1));
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            (events[0].rcode, events[0].source),
            (None, Some(AnswerSource::Truncated))
        );
        assert_eq!(events[1].rcode, Some(0));
    }

    const MODERN: &str = r#"[INFO] 10.244.0.5:53211 - 38126 "A IN Web.Prod.svc.cluster.local. udp 58 false 512" NXDOMAIN qr,aa,rd 151 0.000123s"#;

    /// `kubectl logs -l k8s-app=kube-dns --prefix --timestamps` (every replica's log in one
    /// file, each line naming its pod) was "cannot tell the capture format".
    #[test]
    fn a_kubectl_prefixed_log_was_not_recognised() {
        let line = format!(
            "[pod/coredns-5d78c9869d-x7v2k/coredns] 2024-03-12T10:15:17.735020027Z {MODERN}"
        );
        assert!(looks_like_log_line(&line));
        let (e, t) = ev(&line);
        assert_eq!(e.qname, "web.prod.svc.cluster.local.");
        assert_eq!(t, parse_rfc3339("2024-03-12T10:15:17.735020Z"));
        assert_eq!(
            ev(&format!("[pod/node-local-dns-abcde/node-cache] {MODERN}"))
                .0
                .rcode,
            Some(3)
        );
        // Not a pod source: left as it is (and so not a log line).
        for bad in ["[pod/] ", "[pod/a] ", "[pod/a b/c] ", "[pods/a/c] "] {
            assert!(!looks_like_log_line(&format!("{bad}{MODERN}")), "{bad}");
        }
    }

    #[test]
    fn every_layout_and_wrapper() {
        let (e, t) = ev(MODERN);
        assert_eq!(e.qname, "web.prod.svc.cluster.local.");
        assert_eq!((e.qtype, e.rcode, e.client_port), (1, Some(3), Some(53211)));
        assert_eq!(e.latency, Some(Duration::from_micros(123)));
        assert_eq!(t, None);
        let kubectl = format!("2024-03-12T10:15:17.735020027Z {MODERN}");
        assert_eq!(ev(&kubectl).1, parse_rfc3339("2024-03-12T10:15:17.735020Z"));
        let epoch = format!("1742121064593\t{MODERN}");
        assert_eq!(ev(&epoch).1, Some(Timestamp(1_742_121_064_593_000)));
        let nc = format!("node-cache {MODERN}  ");
        assert_eq!(ev(&nc).0.qname, "web.prod.svc.cluster.local.");
        let mid = r#"2019-01-24T16:18:08.501Z [INFO] 10.244.0.130:37900 - 31448 "AAAA IN a.b. udp 75 false 512" NOERROR qr,aa,rd 168 0.000102235s"#;
        assert_eq!(ev(mid).1, parse_rfc3339("2019-01-24T16:18:08.501Z"));
        assert_eq!(ev(mid).0.qtype, 28);
        let old = r#"192.168.2.14:56084 - [11/Jan/2019:19:57:57 +0000] 7 "A IN kubernetes.default. udp 62 false 512" NXDOMAIN qr,aa,rd,ra 155 0.000134637s"#;
        assert_eq!(ev(old).1, parse_rfc3339("2019-01-11T19:57:57Z"));
        let combined = format!("{MODERN} \"QUERY\"");
        assert_eq!(ev(&combined).0.rcode, Some(3));
        let v6 = r#"[INFO] [fd00::5]:53211 - 1 "SRV IN _http._tcp.x. tcp 58 false 65535" SERVFAIL qr,rd 151 1.5ms"#;
        let (e, _) = ev(v6);
        assert_eq!(e.client, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(e.latency, Some(Duration::from_micros(1500)));
        let both = format!("2024-03-12T10:15:17Z 2019-01-24T16:18:08.501Z {MODERN}");
        assert_eq!(
            ev(&both).1,
            parse_rfc3339("2019-01-24T16:18:08.501Z"),
            "innermost time wins"
        );
    }

    #[test]
    fn other_lines_are_skipped_and_broken_ones_unreadable() {
        for l in [
            "",
            "# comment",
            ".:53",
            "CoreDNS-1.8.0",
            "[INFO] plugin/reload: Running configuration MD5 = 4e235fcc3696966e76816bcd9034ebc7",
            "[ERROR] plugin/errors: 2 google.com.NAMESPACE.svc.cluster.local. A: read tcp 172.20.0.10:34918->172.20.0.10:53: i/o timeout",
            "2024-03-12T10:15:17.735020027Z [ERROR] plugin/errors: 2 x. A: read tcp 1.2.3.4:1->1.2.3.4:53: i/o timeout",
        ] {
            assert!(matches!(parse_line(l), Parsed::NotALogLine), "{l}");
        }
        for l in [
            r#"[INFO] 10.244.0.5:53211 - 38126 "A IN web. udp"#,
            r#"[INFO] 10.244.0.5:53211 - 38126 "A IN web. udp 58 false 512" NXDOMAIN qr,aa,rd 151"#,
            r#"[INFO] 10.244.0.5:53211 - 38126 "BOGUS IN web. udp 58 false 512" NOERROR qr 1 1s"#,
            r#"[INFO] 10.244.0.5:53211 - 38126 "A IN web. udp 58 false 512" NOPE qr 1 1s"#,
            r#"[INFO] 10.244.0.5:53211 - 38126 "A IN web. udp 58 false 512" NOERROR qr 1 1parsec"#,
            r#"[INFO] nothost:53211 - 38126 "A IN web. udp 58 false 512" NOERROR qr 1 1s"#,
        ] {
            assert!(matches!(parse_line(l), Parsed::Bad(_)), "{l}");
        }
    }

    #[test]
    fn redacted_clients_count() {
        let l = r#"node-cache [INFO] x.x.x.x:56799 - 51264 "A IN example.com.ec2.internal. udp 52 false 512" NXDOMAIN qr,rd,ra 52 0.001029851s  "#;
        assert_eq!(ev(l).0.client, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01Z"),
            Some(Timestamp(1_000_000))
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z"),
            Some(Timestamp(951_868_800_000_000))
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T01:00:00+01:00"),
            Some(Timestamp(951_868_800_000_000))
        );
        assert_eq!(
            parse_clf_time("01/Mar/2000:00:00:00 +0000"),
            Some(Timestamp(951_868_800_000_000))
        );
        assert_eq!(parse_rfc3339("2000-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("not a time at all!!"), None);
        assert_eq!(
            parse_go_duration("2m3.5s"),
            Some(Duration::from_millis(123_500))
        );
        assert_eq!(parse_go_duration("150µs"), Some(Duration::from_micros(150)));
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn event_time_is_query_time_and_untimed_lines_keep_order() {
        let text = format!("{MODERN}\n{MODERN}\n1742121064593\t{MODERN}\n");
        let mut r = CorednsLogReader::new(std::io::Cursor::new(text));
        let a = r.next_item().unwrap().unwrap();
        let b = r.next_item().unwrap().unwrap();
        let c = r.next_item().unwrap().unwrap();
        assert!(a.time < b.time);
        assert_eq!(c.time, Timestamp(1_742_121_064_593_000 - 123));
    }

    #[test]
    fn format_line_round_trips() {
        let (e, _) = ev(MODERN);
        let mut s = String::new();
        format_line(&e, 38126, &mut s);
        let (back, _) = ev(s.trim_end());
        assert_eq!(back.qname, e.qname);
        assert_eq!(
            (back.qtype, back.rcode, back.client, back.client_port),
            (e.qtype, e.rcode, e.client, e.client_port)
        );
        assert_eq!(back.latency, e.latency);
    }
}

/// Found by `cargo fuzz` (capture_text): a mangled common-log date overflowed the timestamp
/// arithmetic.
#[cfg(test)]
mod regression {
    use super::*;

    #[test]
    fn absurd_dates_are_no_timestamp_not_an_overflow() {
        assert!(parse_clf_time("11/Jan/66666666666:19:57:57 +0000").is_none());
        assert!(parse_clf_time("11/Jan/9223372036854775807:19:57:57 +0000").is_none());
        assert!(parse_clf_time("11/Jan/2019:19:57:57 +0000").is_some());
        assert!(to_ts(i64::MAX / 2, 23, 59, 59, 999_999, 0).is_none());
        assert!(to_ts(0, 0, 0, 0, 0, 1).is_none(), "before the epoch");
        assert!(parse_clf_time("11/Jan/2019:19:57:57 +\u{fffd}0").is_none());
    }
}
