//! JSON lines (DESIGN §5): one object per line,
//! `{"ts": 1732240000.125, "client": "10.0.0.7", "qname": "web.prod.svc.cluster.local.",
//!   "qtype": "A", "rcode": "NOERROR", "answers": 1}`.
//!
//! `ts` is seconds since the epoch (number) or an RFC 3339 string; `qtype` a mnemonic or a number;
//! `rcode` (mnemonic or number) and `answers` are optional, and so are `port` and `latency`
//! (seconds). Unknown fields are ignored so other tools' output with extra fields reads as is.
//! Blank lines and `#` comments are skipped; any other line that is not such an object is
//! unreadable.

use std::io::BufRead;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::event::{qtype_from_name, rcode_from_name, AnswerSource, QueryEvent, Timestamp};

use super::coredns_log::parse_rfc3339;
use super::{InputCounts, LineReader, Position, Reader, Unreadable};

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(f64),
    Str(String),
}

#[derive(Deserialize)]
struct Record {
    ts: NumOrStr,
    client: String,
    #[serde(default)]
    port: Option<u16>,
    qname: String,
    qtype: NumOrStr,
    #[serde(default)]
    rcode: Option<NumOrStr>,
    #[serde(default)]
    answers: Option<u16>,
    #[serde(default)]
    latency: Option<f64>,
}

pub struct JsonlReader<R> {
    lines: LineReader<R>,
    skipped: u64,
}

impl<R: BufRead + Send> JsonlReader<R> {
    pub fn new(input: R) -> Self {
        JsonlReader {
            lines: LineReader::new(input),
            skipped: 0,
        }
    }
}

fn convert(r: Record) -> Result<QueryEvent, String> {
    let time = match r.ts {
        NumOrStr::Num(s) if s.is_finite() && s >= 0.0 => Timestamp::from_secs_f64(s),
        NumOrStr::Num(_) => return Err("ts out of range".into()),
        NumOrStr::Str(s) => parse_rfc3339(&s).ok_or("ts is neither seconds nor RFC 3339")?,
    };
    let client: IpAddr = r
        .client
        .parse()
        .map_err(|_| "client is not an IP address")?;
    let qtype = match r.qtype {
        NumOrStr::Num(n) if n.fract() == 0.0 && (0.0..=65535.0).contains(&n) => n as u16,
        NumOrStr::Str(s) => qtype_from_name(&s).ok_or("unknown qtype")?,
        _ => return Err("qtype out of range".into()),
    };
    let rcode = match r.rcode {
        None => None,
        Some(NumOrStr::Num(n)) if n.fract() == 0.0 && (0.0..=4095.0).contains(&n) => Some(n as u16),
        Some(NumOrStr::Str(s)) => Some(rcode_from_name(&s).ok_or("unknown rcode")?),
        Some(_) => return Err("rcode out of range".into()),
    };
    let latency = match r.latency {
        None => None,
        // To the microsecond, like every time here (so `capture dump` output reads back exactly).
        Some(l) if l.is_finite() && (0.0..1e9).contains(&l) => {
            Some(Duration::from_micros((l * 1e6).round() as u64))
        }
        Some(_) => return Err("latency out of range".into()),
    };
    if r.qname.is_empty() || r.qname.len() > 1024 {
        return Err("qname empty or too long".into());
    }
    let qname = super::name_from_text(&r.qname);
    Ok(QueryEvent {
        time,
        client,
        client_port: r.port,
        qname,
        qtype,
        rcode,
        answers: r.answers,
        latency,
        source: rcode.map(|_| AnswerSource::Captured),
    })
}

impl<R: BufRead + Send> Reader for JsonlReader<R> {
    fn next_item(&mut self) -> Option<Result<QueryEvent, Unreadable>> {
        loop {
            let (line_no, line) = self.lines.next_line()?;
            let pos = Position::Line(line_no);
            let text = match line.text(pos) {
                Ok(t) => t.trim(),
                Err(u) => return Some(Err(u)),
            };
            if text.is_empty() || text.starts_with('#') {
                self.skipped += 1;
                continue;
            }
            let rec: Record = match serde_json::from_str(text) {
                Ok(r) => r,
                Err(e) => return Some(Err(Unreadable::new(pos, format!("JSON: {e}")))),
            };
            return Some(convert(rec).map_err(|r| Unreadable::new(pos, r)));
        }
    }

    fn counters(&self, s: &mut InputCounts) {
        s.skipped += self.skipped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Result<QueryEvent, Unreadable>> {
        let mut r = JsonlReader::new(std::io::Cursor::new(text.to_string()));
        std::iter::from_fn(|| r.next_item()).collect()
    }

    #[test]
    fn reads_the_documented_shape() {
        let v = read(concat!(
            r#"{"ts": 1732240000.125, "client": "10.0.0.7", "qname": "Web.prod.svc.cluster.local.", "qtype": "A", "rcode": "NOERROR", "answers": 1}"#,
            "\n\n# note\n",
            r#"{"ts": "2024-11-22T01:46:40Z", "client": "fd00::1", "qname": "x", "qtype": 28, "extra": [1]}"#,
            "\n"
        ));
        assert_eq!(v.len(), 2);
        let a = v[0].as_ref().unwrap();
        assert_eq!(a.time, Timestamp(1_732_240_000_125_000));
        assert_eq!(
            (a.qname.as_str(), a.qtype, a.rcode, a.answers),
            ("web.prod.svc.cluster.local.", 1, Some(0), Some(1))
        );
        let b = v[1].as_ref().unwrap();
        assert_eq!((b.qname.as_str(), b.qtype, b.rcode), ("x.", 28, None));
        assert_eq!(b.time, parse_rfc3339("2024-11-22T01:46:40Z").unwrap());
    }

    #[test]
    fn bad_lines_are_unreadable_with_their_line() {
        let v = read("{\"ts\": 1}\nnot json\n{\"ts\": -5, \"client\": \"1.2.3.4\", \"qname\": \"a.\", \"qtype\": \"A\"}\n");
        assert_eq!(v.len(), 3);
        for (i, r) in v.iter().enumerate() {
            assert_eq!(
                r.as_ref().unwrap_err().position,
                Position::Line(i as u64 + 1)
            );
        }
    }
}
