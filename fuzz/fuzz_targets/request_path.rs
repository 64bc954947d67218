//! Any bytes as a client's datagram through the proxy's fast path: parse, allow list, policy
//! answers (ANY, opcodes), cache lookup and the shortcut decision (nxdomain for configured
//! zones, the Kubernetes schema rule). Nothing panics; every answer is a response with the
//! client's ID.
#![no_main]
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ndots::cache::Cache;
use ndots::config::{Config, FileConfig, Overrides};
use ndots::proxy::handler::{Engine, Fast, Proto};
use ndots::wire;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let file = FileConfig::parse(
            "listen: [\"127.0.0.1:0\"]\nshortcut: {mode: nxdomain, zones: [github.com, example.org]}",
        )
        .unwrap();
        let o = Overrides {
            upstreams: vec![(".".into(), "127.0.0.1:9".parse().unwrap())],
            ..Default::default()
        };
        let cfg = Config::from_file_config(file, &o).unwrap();
        let cache = Arc::new(Cache::new(cfg.cache.clone()));
        Engine::new(cfg, cache, Arc::new(AtomicUsize::new(0)), None).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let client = "10.1.2.3:40000".parse().unwrap();
    let mut out = Vec::new();
    let proto = if data.first().is_some_and(|b| b & 1 == 1) { Proto::Tcp } else { Proto::Udp };
    if let Fast::Answered = engine().handle_fast(data, proto, client, Instant::now(), &mut out) {
        let h = wire::Header::parse(&out).expect("every answer has a header");
        assert!(h.is_response());
        assert_eq!(&out[..2], &data[..2], "the client's ID");
    }
});
