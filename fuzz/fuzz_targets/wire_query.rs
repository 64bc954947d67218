//! Any bytes as a client's query: parsing never panics, and every answer the proxy would build
//! for a query that parses (FORMERR, the minimal response, BADVERS, the query without its OPT) has a valid header.
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
            wire::minimal_response_ext(data, &q, wire::RCODE_BADVERS, false, &mut out);
            assert!(wire::Header::parse(&out).is_ok());
            let plain = wire::without_opt(data, &q);
            // Names after the OPT may point into bytes that moved; such a query may not parse
            // again, but one that does has no OPT.
            if let Ok(p) = wire::parse_query(&plain) {
                assert!(p.edns.is_none());
            }
            let _ = wire::question_name_to_string(data, &q.question);
        }
        Err(_) => {
            if wire::formerr_header_only(data, &mut out) {
                assert!(wire::Header::parse(&out).is_ok());
            }
        }
    }
});
