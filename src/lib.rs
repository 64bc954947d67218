//! ndots: find and remove the DNS load that Kubernetes' `ndots:5` search-path expansion creates.
//! See ARCHITECTURE.md for the map of modules and the invariants they keep.

pub mod admin;
pub mod amplify;
pub mod budget;
pub mod cache;
pub mod capture;
pub mod cli;
pub mod collect;
pub mod config;
pub mod demo;
pub mod docs;
pub mod event;
pub mod firewall;
pub mod fleet;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod node_local;
pub mod proxy;
pub mod querylog;
pub mod render;
pub mod replay;
pub mod sched;
pub mod search;
pub mod tap;
pub mod upstream;
pub mod wire;

/// `ndots --version`, the proxy's start-up log line and dnstap's version field: the crate
/// version and the git commit it was built from (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NDOTS_GIT_COMMIT"),
    ")"
);
