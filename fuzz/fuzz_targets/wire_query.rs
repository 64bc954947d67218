//! Any bytes as a client's query: parsing never panics, and every answer the proxy would build
//! for a query that parses (FORMERR, the minimal response, RFC 8482 HINFO) has a valid header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ndots::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::parse_question(data);
    let mut out = Vec::new();
    match wire::parse_query(data) {
        Ok(q) => {
            wire::minimal_response(data, &q, wire::RCODE_SERVFAIL, true, &mut out);
            assert!(wire::Header::parse(&out).is_ok());
            wire::rfc8482_hinfo(data, &q, &mut out);
            assert!(wire::Header::parse(&out).is_ok());
            let _ = wire::question_name_to_string(data, &q.question);
        }
        Err(_) => {
            if wire::formerr_header_only(data, &mut out) {
                assert!(wire::Header::parse(&out).is_ok());
            }
        }
    }
});
