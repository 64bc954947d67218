//! JSON-lines captures written by tests (the `jsonl` capture format, DESIGN §5).

use std::fmt::Write;

/// One JSON-lines capture event.
pub fn event(
    out: &mut String,
    ts: f64,
    client: &str,
    qname: &str,
    qtype: &str,
    rcode: &str,
    n: u16,
) {
    let _ = writeln!(
        out,
        "{{\"ts\": {ts:.3}, \"client\": \"{client}\", \"qname\": \"{qname}\", \
         \"qtype\": \"{qtype}\", \"rcode\": \"{rcode}\", \"answers\": {n}}}"
    );
}
