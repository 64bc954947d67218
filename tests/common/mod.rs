//! Test harness shared by the integration tests: a private network + mount namespace
//! (`netns`), a scripted DNS server that records what it is asked (`scripted_dns`), the real
//! clients that run inside it (`clients`: glibc's getent, a static musl client), a
//! scripted authoritative upstream for the proxy (`upstream`), the proxy itself in process or
//! as the binary (`proxy`), small DNS exchanges over real sockets (`dns`), nsd serving a zone (`nsd`), JSON-lines captures (`jsonl`), a Prometheus
//! server (`prometheus`), and the rest (`tools`: tools on PATH, ports, HTTP, processes).
#![allow(dead_code)]

pub mod clients;
pub mod dns;
pub mod jsonl;
pub mod netns;
pub mod nsd;
pub mod prometheus;
pub mod proxy;
pub mod scripted_dns;
pub mod tools;
pub mod upstream;
