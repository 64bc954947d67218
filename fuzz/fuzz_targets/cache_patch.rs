//! Any bytes as an upstream response: one that parses is stored and then rendered for a client
//! (the cache-hit patcher: ID, question case, TTLs less the age, EDNS, TC). Nothing panics, the
//! result has a valid header, and over UDP it never exceeds the client's size (RFC 6891 §7).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use ndots::cache::{Answer, Served};
use ndots::config::{CacheConfig, Config, FileConfig, Overrides};
use ndots::wire;

/// The default cache settings (TTL caps, negative TTL).
fn cache_config() -> &'static CacheConfig {
    static CONFIG: OnceLock<CacheConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let file = FileConfig::parse("listen: [\"127.0.0.1:0\"]").unwrap();
        let o = Overrides {
            upstreams: vec![(".".into(), "127.0.0.1:9".parse().unwrap())],
            ..Default::default()
        };
        Config::from_file_config(file, &o).unwrap().cache
    })
}

fuzz_target!(|data: &[u8]| {
    // The first three bytes choose the client: its query, the answer's age, its UDP size.
    let [pick, age, size, resp @ ..] = data else {
        return;
    };
    let Ok(info) = wire::parse_response(resp) else {
        return;
    };
    let answer = Answer::from_response(resp, &info, cache_config());
    let (name, qtype, edns) = [
        ("web.prod.svc.cluster.local.", 1u16, false),
        ("WeB.PrOd.SvC.cluster.local.", 28, true),
        (".", 2, true),
    ][*pick as usize % 3];
    let mut query = Vec::new();
    wire::build_query(0x1234, name, qtype, edns, &mut query).unwrap();
    let q = wire::parse_query(&query).unwrap();
    let max_len = 512 + *size as usize * 16;
    let mut out = Vec::new();
    let served = match pick & 0xc0 {
        0x80 => Served::Stale,
        0x40 => Served::Fresh,
        _ => Served::Cached(*age as u32 * 1000),
    };
    answer.render(&query, &q, served, max_len, &mut out);
    let h = wire::Header::parse(&out).expect("a rendered answer has a header");
    assert!(h.is_response());
    assert!(out.len() <= max_len, "{} bytes for a {max_len}-byte client", out.len());
});
