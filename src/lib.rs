//! ndots: find and remove the DNS load that Kubernetes' `ndots:5` search-path expansion creates.
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

pub mod admin;
pub mod amplify;
pub mod cache;
pub mod capture;
pub mod cli;
pub mod config;
pub mod demo;
pub mod docs;
pub mod event;
pub mod firewall;
pub mod metrics;
pub mod netlink;
pub mod node_local;
pub mod proxy;
pub mod render;
pub mod replay;
pub mod search;
pub mod upstream;
pub mod wire;
