//! Test harness shared by the integration tests: a private network + mount namespace
//! (`netns`) and a scripted DNS server that records what it is asked (`scripted_dns`).
#![allow(dead_code)]

pub mod netns;
pub mod scripted_dns;
