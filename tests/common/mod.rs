//! Test harness shared by the integration tests: a private network + mount namespace
//! (`netns`), a scripted DNS server that records what it is asked (`scripted_dns`), and the
//! real clients that run inside it (`clients`: glibc's getent, a static musl client).
#![allow(dead_code)]

pub mod clients;
pub mod netns;
pub mod scripted_dns;
