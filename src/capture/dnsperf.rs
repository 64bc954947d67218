//! dnsperf query files: `name type` per line (dnsperf(1), "Configuring input files"); blank lines
//! and `;` or `#` comments are skipped.
//!
//! The file has no clients, no times and no answers: every event comes from 0.0.0.0, times are
//! synthesised 1 ms apart from the epoch in file order (so a tracker sees the order, and a replay
//! can pace it), and `rcode`, `answers`, `latency` are `None`.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};

use crate::event::{qtype_from_name, QueryEvent, Timestamp};

use super::{InputCounts, LineReader, Position, Reader, Unreadable};

/// Spacing of the synthesised times.
pub const SPACING_US: u64 = 1_000;

pub struct DnsperfReader<R> {
    lines: LineReader<R>,
    n: u64,
    skipped: u64,
}

impl<R: BufRead + Send> DnsperfReader<R> {
    pub fn new(input: R) -> Self {
        DnsperfReader {
            lines: LineReader::new(input),
            n: 0,
            skipped: 0,
        }
    }
}

/// `name type`, and nothing else, with a known type.
pub fn looks_like_query_line(line: &str) -> bool {
    parse(line).is_ok()
}

fn parse(line: &str) -> Result<(String, u16), &'static str> {
    let mut it = line.split_ascii_whitespace();
    let (Some(name), Some(t)) = (it.next(), it.next()) else {
        return Err("expected `name type`");
    };
    if it.next().is_some() {
        return Err("expected `name type` and nothing more");
    }
    let qtype = qtype_from_name(t).ok_or("unknown query type")?;
    if name.len() > 1024 || name.starts_with('"') || name.starts_with('{') {
        return Err("not a domain name");
    }
    let qname = super::name_from_text(name);
    Ok((qname, qtype))
}

impl<R: BufRead + Send> Reader for DnsperfReader<R> {
    fn next_item(&mut self) -> Option<Result<QueryEvent, Unreadable>> {
        loop {
            let (line_no, line) = self.lines.next_line()?;
            let pos = Position::Line(line_no);
            let text = match line.text(pos) {
                Ok(t) => t.trim(),
                Err(u) => return Some(Err(u)),
            };
            if text.is_empty() || text.starts_with(';') || text.starts_with('#') {
                self.skipped += 1;
                continue;
            }
            return Some(match parse(text) {
                Ok((qname, qtype)) => {
                    self.n += 1;
                    Ok(QueryEvent {
                        time: Timestamp(self.n * SPACING_US),
                        client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        client_port: None,
                        qname,
                        qtype,
                        rcode: None,
                        answers: None,
                        latency: None,
                        source: None,
                    })
                }
                Err(r) => Err(Unreadable::new(pos, r)),
            });
        }
    }

    fn counters(&self, s: &mut InputCounts) {
        s.skipped += self.skipped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_types_in_order() {
        let mut r = DnsperfReader::new(std::io::Cursor::new(
            "; c\nWWW.example.com A\n\nexample.org. aaaa\nbad\n",
        ));
        let a = r.next_item().unwrap().unwrap();
        let b = r.next_item().unwrap().unwrap();
        assert_eq!((a.qname.as_str(), a.qtype), ("www.example.com.", 1));
        assert_eq!((b.qname.as_str(), b.qtype), ("example.org.", 28));
        assert!(a.time < b.time);
        assert_eq!(
            r.next_item().unwrap().unwrap_err().position,
            Position::Line(5)
        );
        assert!(r.next_item().is_none());
    }
}
