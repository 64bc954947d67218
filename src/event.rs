//! `QueryEvent`: the one currency between the proxy, the capture readers and the tracker
//! (DESIGN §2). A capture replayed offline and the live proxy must produce the same report for
//! the same traffic, so everything the tracker needs is here and nothing else.

use std::net::IpAddr;
use std::time::Duration;

/// Microseconds since the Unix epoch. Captures carry absolute times; the proxy stamps wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_micros() as u64)
    }
    pub fn from_secs_f64(secs: f64) -> Self {
        Timestamp((secs * 1e6).round().max(0.0) as u64)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

/// Where an answer came from. Live proxy answers name their stage; captures only know that a
/// response was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnswerSource {
    Cache,
    Upstream,
    Shortcut,
    Stale,
    /// A local policy answer that is not a shortcut: NOTIMP for other opcodes, REFUSED for
    /// zone transfers or refused clients.
    Local,
    /// A response read from a capture.
    Captured,
    /// A UDP response read from a capture with TC set (RFC 1035 §4.1.1): not the answer, the
    /// stub asks again over TCP. Its event has no `rcode`: the walk stays open for that query.
    Truncated,
    /// No response within the answer wait, in a capture that holds responses: the query was
    /// lost, or its answer was (not a capture of queries alone, whose events have no source).
    /// The stub sends it again after its retry interval: the walk waits for that.
    NoAnswer,
}

impl AnswerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerSource::Cache => "cache",
            AnswerSource::Upstream => "upstream",
            AnswerSource::Shortcut => "shortcut",
            AnswerSource::Stale => "stale",
            AnswerSource::Local => "local",
            AnswerSource::Captured => "captured",
            AnswerSource::Truncated => "truncated",
            AnswerSource::NoAnswer => "no_answer",
        }
    }
}

/// One query and, when known, its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryEvent {
    pub time: Timestamp,
    pub client: IpAddr,
    /// Client source port when known (pairs queries with answers in captures).
    pub client_port: Option<u16>,
    /// Lowercase, absolute (trailing dot), presentation format (`\DDD` escapes for odd bytes).
    pub qname: String,
    /// Query type number (RFC 1035 §3.2.2; 1 = A, 28 = AAAA).
    pub qtype: u16,
    /// Response code (RFC 1035 §4.1.1, extended by EDNS); `None` when no answer was seen.
    pub rcode: Option<u16>,
    /// Answer-section record count; `None` when unknown.
    pub answers: Option<u16>,
    /// Time from query to answer; `None` when unknown.
    pub latency: Option<Duration>,
    /// `None` when the answer was not seen.
    pub source: Option<AnswerSource>,
}

/// Mnemonic of a query type for reports and metric labels.
pub fn qtype_name(qtype: u16) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow::*;
    match qtype {
        1 => Borrowed("A"),
        2 => Borrowed("NS"),
        5 => Borrowed("CNAME"),
        6 => Borrowed("SOA"),
        12 => Borrowed("PTR"),
        15 => Borrowed("MX"),
        16 => Borrowed("TXT"),
        28 => Borrowed("AAAA"),
        33 => Borrowed("SRV"),
        35 => Borrowed("NAPTR"),
        41 => Borrowed("OPT"),
        43 => Borrowed("DS"),
        46 => Borrowed("RRSIG"),
        48 => Borrowed("DNSKEY"),
        64 => Borrowed("SVCB"),
        65 => Borrowed("HTTPS"),
        255 => Borrowed("ANY"),
        257 => Borrowed("CAA"),
        n => Owned(format!("TYPE{n}")),
    }
}

/// Parse a query type mnemonic (`A`, `aaaa`, `TYPE65`).
pub fn qtype_from_name(s: &str) -> Option<u16> {
    let up = s.to_ascii_uppercase();
    if let Some(n) = up.strip_prefix("TYPE") {
        return n.parse().ok();
    }
    (0u16..=300).find(|&t| qtype_name(t) == up.as_str())
}

/// Mnemonic of a response code (RFC 1035, RFC 6895 registry).
pub fn rcode_name(rcode: u16) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow::*;
    match rcode {
        0 => Borrowed("NOERROR"),
        1 => Borrowed("FORMERR"),
        2 => Borrowed("SERVFAIL"),
        3 => Borrowed("NXDOMAIN"),
        4 => Borrowed("NOTIMP"),
        5 => Borrowed("REFUSED"),
        6 => Borrowed("YXDOMAIN"),
        7 => Borrowed("YXRRSET"),
        8 => Borrowed("NXRRSET"),
        9 => Borrowed("NOTAUTH"),
        10 => Borrowed("NOTZONE"),
        16 => Borrowed("BADVERS"),
        n => Owned(format!("RCODE{n}")),
    }
}

pub fn rcode_from_name(s: &str) -> Option<u16> {
    let up = s.to_ascii_uppercase();
    if let Some(n) = up.strip_prefix("RCODE") {
        return n.parse().ok();
    }
    (0u16..=16).find(|&r| rcode_name(r) == up.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn type_and_rcode_names_round_trip() {
        for t in [1u16, 28, 33, 65, 255, 999] {
            assert_eq!(qtype_from_name(&qtype_name(t)), Some(t));
        }
        assert_eq!(qtype_from_name("aaaa"), Some(28));
        for r in [0u16, 2, 3, 5, 16, 23] {
            assert_eq!(rcode_from_name(&rcode_name(r)), Some(r));
        }
    }
}
