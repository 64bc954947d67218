//! Test harness shared by the integration tests: a private network + mount namespace
//! (`netns`), a scripted DNS server that records what it is asked (`scripted_dns`), and a
//! scripted authoritative upstream for the proxy (`upstream`).
#![allow(dead_code)]

pub mod netns;
pub mod scripted_dns;
pub mod upstream;
