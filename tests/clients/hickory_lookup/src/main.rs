//! Lookup client for the real-client tests (tests/real_clients.rs): hickory-resolver as a Rust
//! service uses it, configured from /etc/resolv.conf (`TokioResolver::builder_tokio`).
//!
//! usage: hickory_lookup NAME [inet|inet6|unspec]
//! prints "canon NAME" (the candidate whose lookup gave the addresses) and one "addr ADDRESS"
//! line per result and exits 0, or prints "error MESSAGE" and exits 2. `unspec` keeps the
//! default strategy (A and AAAA in parallel); `inet` and `inet6` ask one type.

use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::TokioResolver;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(name) = args.get(1) else {
        eprintln!("usage: hickory_lookup NAME [inet|inet6|unspec]");
        std::process::exit(64);
    };
    let mut builder = match TokioResolver::builder_tokio() {
        Ok(b) => b,
        Err(e) => {
            println!("error {e}");
            std::process::exit(2);
        }
    };
    match args.get(2).map(String::as_str) {
        Some("inet") => builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4Only,
        Some("inet6") => builder.options_mut().ip_strategy = LookupIpStrategy::Ipv6Only,
        _ => {}
    }
    let resolver = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            println!("error {e}");
            std::process::exit(2);
        }
    };
    match resolver.lookup_ip(name.as_str()).await {
        Ok(lookup) if lookup.iter().next().is_some() => {
            println!("canon {}", lookup.query().name());
            for ip in lookup.iter() {
                println!("addr {ip}");
            }
        }
        Ok(_) => {
            println!("error no addresses");
            std::process::exit(2);
        }
        Err(e) => {
            println!("error {e}");
            std::process::exit(2);
        }
    }
}
