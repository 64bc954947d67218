//! Any bytes as a client's query: parsing never panics, and every answer the proxy would build
//! for a query that parses (FORMERR, the minimal response, BADVERS) has a valid header, and the
//! query the proxy asks upstream in its place (`upstream_query`, with and without our OPT) parses
//! again as a query with the same question.
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
            for (rd, edns) in [(true, true), (false, false)] {
                let up = wire::upstream_query(data, &q, rd, edns);
                let p = wire::parse_query(&up).expect("the upstream query parses");
                assert_eq!(p.edns.is_some(), edns && q.edns.is_some());
                assert_eq!(p.question.name_bytes(&up), q.question.name_bytes(data));
                assert_eq!(p.header.flags & wire::FLAG_RD != 0, rd);
            }
            let _ = wire::question_name_to_string(data, &q.question);
        }
        Err(wire::QueryProblem::BadOpt(q, _)) => {
            wire::minimal_response(data, &q, wire::RCODE_FORMERR, false, &mut out);
            assert!(wire::Header::parse(&out).is_ok());
            assert!(out.len() <= data.len(), "a FORMERR larger than its query");
        }
        Err(_) => {
            if wire::formerr_header_only(data, &mut out) {
                assert!(wire::Header::parse(&out).is_ok());
            }
        }
    }
});
