//! The demo's cluster: the names that exist (a `cluster.local` zone with a few namespaces and
//! services, a few external zones, the node's domain) and the pods that look names up, each
//! with its namespace, its libc and the names its code asks for.
//!
//! The mix is made to look like a real cluster's, not to flatter the shortcut: most lookups are
//! in-cluster short names (cheap under ndots:5), a third are external names (the expensive
//! ones), some external names are a long tail of distinct names (object-store buckets) that no
//! cache absorbs, and one workload writes a name that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::search::Stub;

/// The node's search domain, which kubelet appends to every pod's search list.
pub const NODE_DOMAIN: &str = "ec2.internal";
/// Zones the demo proxy has in `shortcut.zones` (as `configs/example.yaml` has).
pub const SHORTCUT_ZONES: &[&str] = &["github.com", "amazonaws.com"];
/// A name under this suffix exists for any first label: the long tail of bucket names.
const BUCKETS: &str = "s3.eu-west-1.amazonaws.com.";

/// A zone the upstream is authoritative for (or, for `.`, answers for as a resolver would).
#[derive(Clone, Debug)]
pub struct Zone {
    pub apex: String,
    /// TTL of the zone's records: 5 s in-cluster (CoreDNS's `kubernetes` default), 60 s outside.
    pub ttl: u32,
    /// SOA MINIMUM and TTL: how long a negative answer may be cached (RFC 2308 §5).
    pub negative_ttl: u32,
}

/// Every name that exists, with its addresses.
pub struct World {
    zones: Vec<Zone>,
    records: BTreeMap<String, Vec<IpAddr>>,
    /// Owners and their ancestors inside their zone: names that exist (NODATA, not NXDOMAIN).
    existing: BTreeSet<String>,
}

/// `(namespace, services)` of the demo cluster.
const NAMESPACES: &[(&str, &[&str])] = &[
    ("default", &["web", "api"]),
    ("shop", &["frontend", "cart", "catalog", "redis"]),
    ("payments", &["ledger", "postgres", "fraud"]),
    ("monitoring", &["prometheus", "grafana"]),
    ("kube-system", &["kube-dns"]),
];

/// External names with an IPv4 and an IPv6 address each.
const EXTERNAL: &[&str] = &[
    "api.github.com.",
    "codeload.github.com.",
    "sts.amazonaws.com.",
    "dynamodb.eu-west-1.amazonaws.com.",
    "storage.googleapis.com.",
    "oauth2.googleapis.com.",
    "o1.ingest.sentry.io.",
];

impl World {
    pub fn new() -> World {
        let zone = |apex: &str, ttl, negative_ttl| Zone {
            apex: apex.into(),
            ttl,
            negative_ttl,
        };
        let zones = vec![
            zone("cluster.local.", 5, 5),
            zone("github.com.", 60, 60),
            zone("amazonaws.com.", 60, 60),
            zone("googleapis.com.", 60, 60),
            zone("sentry.io.", 60, 60),
            zone("ec2.internal.", 60, 60),
            zone(".", 60, 86400),
        ];
        let mut w = World {
            zones,
            records: BTreeMap::new(),
            existing: BTreeSet::new(),
        };
        // ClusterIP services: IPv4 only, as in most clusters, so AAAA is NODATA.
        for (n, (ns, services)) in NAMESPACES.iter().enumerate() {
            for (i, svc) in services.iter().enumerate() {
                let ip = Ipv4Addr::new(10, 96, n as u8 + 1, i as u8 + 10);
                w.add(&format!("{svc}.{ns}.svc.cluster.local."), vec![ip.into()]);
            }
        }
        for (i, name) in EXTERNAL.iter().enumerate() {
            let v4 = Ipv4Addr::new(198, 51, 100, i as u8 + 1);
            let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1);
            w.add(name, vec![v4.into(), v6.into()]);
        }
        w.add(
            "ip-10-0-1-23.ec2.internal.",
            vec![Ipv4Addr::new(10, 0, 1, 23).into()],
        );
        w.add(BUCKETS, vec![Ipv4Addr::new(203, 0, 113, 1).into()]);
        w
    }

    fn add(&mut self, name: &str, addrs: Vec<IpAddr>) {
        let zone = self.zone_of(name).apex.clone();
        // The owner and every ancestor down to the apex exist (empty non-terminals, RFC 8020).
        let mut n = name.to_string();
        loop {
            self.existing.insert(n.clone());
            if n == zone || n == "." {
                break;
            }
            n = match n.split_once('.') {
                Some((_, rest)) if !rest.is_empty() => rest.to_string(),
                _ => ".".to_string(),
            };
        }
        self.records.insert(name.to_string(), addrs);
    }

    /// The closest enclosing zone of `name` (absolute, lowercase).
    pub fn zone_of(&self, name: &str) -> &Zone {
        self.zones
            .iter()
            .filter(|z| z.apex == "." || name == z.apex || name.ends_with(&format!(".{}", z.apex)))
            .max_by_key(|z| z.apex.len())
            .expect("the root zone encloses every name")
    }

    pub fn is_apex(&self, name: &str) -> bool {
        self.zones.iter().any(|z| z.apex == name)
    }

    /// Addresses of `name`; a bucket name (`anything.s3.eu-west-1.amazonaws.com`) matches the
    /// wildcard.
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        if let Some(a) = self.records.get(name) {
            return a.clone();
        }
        match bucket_label(name) {
            Some(_) => self.records.get(BUCKETS).cloned().unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Whether `name` exists (with or without records of some type).
    pub fn exists(&self, name: &str) -> bool {
        self.is_apex(name) || self.existing.contains(name) || bucket_label(name).is_some()
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

fn bucket_label(name: &str) -> Option<&str> {
    let label = name.strip_suffix(BUCKETS)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

/// One simulated pod.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: &'static str,
    pub stub: Stub,
    /// Its source address: each pod gets its own loopback address, so the proxy's tracker sees
    /// one client per pod, as it sees pod IPs on a node.
    pub ip: Ipv4Addr,
    /// The names its code looks up, with weights.
    pub names: Vec<(String, u32)>,
}

/// What each namespace's workloads look up: `(name as written in code, weight)`. `{n}` stands
/// for a bucket number (the long tail).
fn workload(namespace: &str) -> &'static [(&'static str, u32)] {
    match namespace {
        "default" => &[
            ("api", 30),
            ("cart.shop", 15),
            ("api.github.com", 15),
            ("sts.amazonaws.com", 10),
            ("storage.googleapis.com", 10),
        ],
        "shop" => &[
            ("cart", 25),
            ("catalog", 20),
            ("redis", 25),
            ("ledger.payments", 10),
            ("tenant-{n}.s3.eu-west-1.amazonaws.com", 15),
            ("redis-cache", 5),
        ],
        "payments" => &[
            ("postgres", 30),
            ("fraud", 15),
            ("sts.amazonaws.com", 10),
            ("dynamodb.eu-west-1.amazonaws.com", 15),
            ("o1.ingest.sentry.io", 10),
        ],
        "monitoring" => &[
            ("prometheus", 10),
            ("web.default", 15),
            ("cart.shop.svc", 10),
            ("kube-dns.kube-system.svc.cluster.local", 10),
            ("oauth2.googleapis.com", 10),
            ("codeload.github.com", 5),
        ],
        _ => &[],
    }
}

/// The pods: for each namespace with a workload, `per_namespace` pods, glibc and musl (Alpine)
/// images alternating from a seeded coin.
pub fn pods(per_namespace: usize, rng: &mut StdRng) -> Vec<Pod> {
    let mut pods = Vec::new();
    for (n, (ns, _)) in NAMESPACES.iter().enumerate() {
        let names: Vec<(String, u32)> = workload(ns)
            .iter()
            .map(|(name, w)| (name.to_string(), *w))
            .collect();
        if names.is_empty() {
            continue;
        }
        for i in 0..per_namespace {
            let stub = if rng.random_bool(0.5) {
                Stub::Glibc
            } else {
                Stub::Musl
            };
            pods.push(Pod {
                name: format!("{ns}-{i}"),
                namespace: ns,
                stub,
                ip: Ipv4Addr::new(127, 20, n as u8 + 1, i as u8 + 10),
                names: names.clone(),
            });
        }
    }
    pods
}

/// One lookup to make: which pod asks for which name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub pod: usize,
    pub name: String,
}

/// `count` lookups drawn from the pods' workloads, deterministic from `seed`.
pub fn plan(pods: &[Pod], count: usize, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e64_6f74_735f_6465);
    (0..count)
        .map(|_| {
            let pod = rng.random_range(0..pods.len());
            let total: u32 = pods[pod].names.iter().map(|(_, w)| w).sum();
            let mut pick = rng.random_range(0..total);
            let mut name = pods[pod].names[0].0.clone();
            for (n, w) in &pods[pod].names {
                if pick < *w {
                    name = n.clone();
                    break;
                }
                pick -= w;
            }
            if name.contains("{n}") {
                name = name.replace("{n}", &rng.random_range(0..400u32).to_string());
            }
            Planned { pod, name }
        })
        .collect()
}

/// A seeded generator for [`pods`].
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exist_as_a_zone_says() {
        let w = World::new();
        assert_eq!(w.addresses("web.default.svc.cluster.local.").len(), 1);
        assert!(w.exists("default.svc.cluster.local."), "empty non-terminal");
        assert!(w.exists("svc.cluster.local."));
        assert!(!w.exists("com.svc.cluster.local."));
        assert!(!w.exists("api.github.com.default.svc.cluster.local."));
        assert_eq!(w.addresses("tenant-7.s3.eu-west-1.amazonaws.com.").len(), 1);
        assert!(w.addresses("a.b.s3.eu-west-1.amazonaws.com.").is_empty());
        assert_eq!(w.zone_of("x.ec2.internal.").apex, "ec2.internal.");
        assert_eq!(w.zone_of("redis-cache.").apex, ".");
    }

    #[test]
    fn the_plan_is_deterministic_from_the_seed() {
        let p = pods(3, &mut rng(7));
        assert_eq!(plan(&p, 50, 7), plan(&p, 50, 7));
        assert_ne!(plan(&p, 50, 7), plan(&p, 50, 8));
    }
}
