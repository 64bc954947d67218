//! The search-path model (DESIGN §2): search lists, ndots rules, stub resolver models,
//! decomposition of a name into base + suffix, the Kubernetes schema and the shortcut policy.
//!
//! The files follow the data flow: `resolv_conf` turns a file (and, for glibc, the environment)
//! into [`ResolverSettings`]; `stub` expands a name into the walk a stub sends under those
//! settings; `decompose` reads a query name back into base + search suffix; `schema` says which
//! names can exist under the cluster domain; `shortcut` combines the last two into the proxy's
//! decision. `pod_dns` writes the resolv.conf kubelet would for a pod's dnsPolicy and dnsConfig.
//! `workloads` maps client addresses to their pod DNS config (`--pod-dns-config`).
//! Rules come from `../shared/resolvers.md` (read from the libc sources and checked
//! against real clients by `tests/real_clients.rs`).

pub mod decompose;
pub mod name;
pub mod pod_dns;
pub mod resolv_conf;
pub mod schema;
pub mod shortcut;
pub mod stub;
pub mod workloads;

pub use decompose::{Decomposition, SearchShape, SuffixKind};
pub use resolv_conf::{Environment, ResolverSettings};
pub use schema::SchemaName;
pub use shortcut::{Expansion, Reason, ShortcutPolicy};
pub use stub::{Answer, Family, Query, Stub, Walk, WalkTally, Walker, QTYPE_A, QTYPE_AAAA};
