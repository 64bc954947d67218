//! The shortcut decision (DESIGN §3 "Shortcuts"): is a query a search-path expansion nobody
//! meant? Pure and cheap: the proxy asks it for every query that misses the cache.
//!
//! Rules, in order:
//! 1. Only names under one of the search suffixes (a [`Decomposition`] exists).
//! 2. Never a name the Kubernetes schema allows (under the cluster domain), whatever the zones
//!    say: namespaces named `com` or `io` make `web.com.svc.cluster.local` a real Service.
//!    Never a name under `shortcut.exempt` (operators' own records CoreDNS serves).
//! 3. Zone: the base lies in a configured zone (`api.github.com` in `github.com`).
//! 4. Schema (`kubernetes_schema: true`): under the cluster domain, the name cannot exist.

use crate::config::{ClusterConfig, ShortcutConfig};

use super::decompose::{Decomposition, SearchShape, SuffixKind};
use super::name::{in_zone, join};
use super::schema;

/// Why a query was judged an expansion. The words are metric labels (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Zone,
    Schema,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Zone => "zone",
            Reason::Schema => "schema",
        }
    }
}

/// A query judged a search-path expansion: `base` + `suffix` (slices of the query name, no
/// trailing dots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expansion<'a> {
    pub base: &'a str,
    pub suffix: &'a str,
    pub kind: SuffixKind,
    pub namespace: Option<&'a str>,
    /// Position of the suffix in the search list shape.
    pub index: usize,
    pub reason: Reason,
}

impl<'a> Expansion<'a> {
    fn new(d: Decomposition<'a>, reason: Reason) -> Self {
        Expansion {
            base: d.base,
            suffix: d.suffix,
            kind: d.kind,
            namespace: d.namespace,
            index: d.index,
            reason,
        }
    }
}

/// The shortcut policy built once from the config (and rebuilt on reload).
#[derive(Clone, Debug)]
pub struct ShortcutPolicy {
    shape: SearchShape,
    /// Lowercase, no trailing dot.
    zones: Vec<String>,
    kubernetes_schema: bool,
    /// Lowercase, no trailing dot: never shortcut, nor anything under them.
    exempt: Vec<String>,
}

impl ShortcutPolicy {
    pub fn new(cluster: &ClusterConfig, shortcut: &ShortcutConfig) -> Self {
        Self::from_parts(
            SearchShape::new(cluster),
            &shortcut.zones,
            shortcut.kubernetes_schema,
        )
        .with_exempt(&shortcut.exempt)
    }

    /// Names (and the names under them) the shortcut leaves alone.
    pub fn with_exempt<S: AsRef<str>>(mut self, exempt: &[S]) -> Self {
        self.exempt = exempt
            .iter()
            .map(|z| z.as_ref().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether `name` (no trailing dot) is exempt.
    pub fn is_exempt(&self, name: &str) -> bool {
        self.exempt.iter().any(|z| in_zone(name, z))
    }

    pub fn from_parts<S: AsRef<str>>(
        shape: SearchShape,
        zones: &[S],
        kubernetes_schema: bool,
    ) -> Self {
        let zones = zones
            .iter()
            .map(|z| z.as_ref().trim_end_matches('.').to_ascii_lowercase())
            .collect();
        ShortcutPolicy {
            shape,
            zones,
            kubernetes_schema,
            exempt: Vec::new(),
        }
    }

    pub fn shape(&self) -> &SearchShape {
        &self.shape
    }

    /// `None`: forward as usual. `Some`: the query is an expansion nobody meant. `qtype` does
    /// not change the answer today (a name that cannot exist has no records of any type); it
    /// is taken so a type-specific rule can be added without changing callers.
    pub fn decide<'a>(&self, qname: &'a str, _qtype: u16) -> Option<Expansion<'a>> {
        let name = qname.strip_suffix('.').unwrap_or(qname);
        let mut readings = self.shape.decompose(name);
        let first = readings.next()?;
        let domain = self.shape.domain();
        let under_cluster = in_zone(name, domain);
        if under_cluster && schema::classify(name, domain).is_some() {
            return None;
        }
        if self.is_exempt(name) {
            return None;
        }
        if !self.zones.is_empty() {
            for d in std::iter::once(first).chain(readings) {
                if self.zones.iter().any(|z| in_zone(d.base, z)) {
                    return Some(Expansion::new(d, Reason::Zone));
                }
            }
        }
        if under_cluster && self.kubernetes_schema {
            return Some(Expansion::new(first, Reason::Schema));
        }
        None
    }

    /// For an expansion `B.S_i`, the names the stub would try next (`B.S_{i+1}`, ..., `B.`) minus
    /// those the rules exclude: what autopath resolves, first that exists wins. Absolute,
    /// lowercase. A `*` entry after `S_i` is skipped unless the expansion told the namespace.
    pub fn autopath_candidates(&self, e: &Expansion<'_>) -> Vec<String> {
        let mut out = Vec::with_capacity(self.shape.len() + 1 - e.index.min(self.shape.len()));
        for j in e.index + 1..self.shape.len() {
            let Some(suffix) = self.shape.suffix(j, e.namespace) else {
                continue;
            };
            let candidate = join(e.base, &suffix);
            if self.decide(&candidate, 0).is_none() {
                out.push(candidate);
            }
        }
        out.push(join(e.base, ""));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(zones: &[&str], schema: bool) -> ShortcutPolicy {
        let shape = SearchShape::from_parts(
            "cluster.local",
            &["*.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            &["ec2.internal"],
        );
        ShortcutPolicy::from_parts(shape, zones, schema)
    }

    #[test]
    fn external_name_expansions_by_zone() {
        let p = policy(&["github.com"], false);
        let e = p
            .decide("api.github.com.default.svc.cluster.local.", 1)
            .unwrap();
        assert_eq!(
            (e.base, e.reason, e.kind),
            ("api.github.com", Reason::Zone, SuffixKind::Namespace)
        );
        let e = p.decide("api.github.com.ec2.internal.", 28).unwrap();
        assert_eq!((e.base, e.kind), ("api.github.com", SuffixKind::Node));
        let e = p.decide("api.github.com.cluster.local.", 1).unwrap();
        assert_eq!(e.kind, SuffixKind::Cluster);
        // The real name and other zones are forwarded.
        assert!(p.decide("api.github.com.", 1).is_none());
        assert!(p.decide("example.org.ec2.internal.", 1).is_none());
        assert!(p.decide("notgithub.com.ec2.internal.", 1).is_none());
    }

    #[test]
    fn schema_allowed_names_are_never_shortcut() {
        let p = policy(&["com", "io", "dev", "github.com"], true);
        for n in [
            "web.com.svc.cluster.local.",
            "github.io.svc.cluster.local.",
            "app.dev.svc.cluster.local.",
            // <hostname>.<service>.<ns>.svc: pod "api" of headless service "github" in "com".
            "api.github.com.svc.cluster.local.",
            "web.prod.svc.cluster.local.",
            "_http._tcp.web.prod.svc.cluster.local.",
            "prod.svc.cluster.local.",
        ] {
            assert_eq!(p.decide(n, 1), None, "{n}");
        }
    }

    #[test]
    fn schema_reason_needs_the_flag() {
        let on = policy(&[], true);
        let off = policy(&[], false);
        let q = "www.example.org.default.svc.cluster.local.";
        let e = on.decide(q, 1).unwrap();
        assert_eq!((e.base, e.reason), ("www.example.org", Reason::Schema));
        // Four labels below the domain read as <hostname>.<service>.<ns>.svc: allowed.
        assert_eq!(on.decide("example.org.default.svc.cluster.local.", 1), None);
        assert_eq!(off.decide(q, 1), None);
        assert_eq!(on.decide("foo.cluster.local.", 1).unwrap().base, "foo");
        // Names not under a search suffix are none of our business.
        assert_eq!(on.decide("example.org.", 1), None);
        assert_eq!(on.decide("example.org.ec2.internal.", 1), None);
    }

    #[test]
    fn autopath_candidates_skip_excluded_names() {
        let p = policy(&["github.com"], true);
        let e = p
            .decide("api.github.com.default.svc.cluster.local.", 1)
            .unwrap();
        // svc: allowed by the schema (hostname.service.ns); cluster: impossible; node: zone.
        assert_eq!(
            p.autopath_candidates(&e),
            ["api.github.com.svc.cluster.local.", "api.github.com."]
        );
        let p = policy(&[], true);
        let e = p
            .decide("www.example.org.default.svc.cluster.local.", 1)
            .unwrap();
        assert_eq!(
            p.autopath_candidates(&e),
            [
                "www.example.org.svc.cluster.local.",
                "www.example.org.ec2.internal.",
                "www.example.org."
            ]
        );
    }

    #[test]
    fn autopath_from_a_node_suffix_leaves_the_base() {
        let p = policy(&["github.com"], true);
        let e = p.decide("api.github.com.ec2.internal.", 1).unwrap();
        assert_eq!(p.autopath_candidates(&e), ["api.github.com."]);
    }

    /// The shortcut answers NXDOMAIN for what it judges an expansion and forwards the rest:
    /// the stubs must reach the same result, and the upstream must see fewer queries.
    #[test]
    fn nxdomain_shortcut_changes_no_result_and_removes_load() {
        use crate::search::stub::{Answer, Family, Stub};
        use crate::search::ResolverSettings;
        let p = policy(&["github.com", "amazonaws.com"], true);
        let existing = [
            "web.default.svc.cluster.local.",
            "web.prod.svc.cluster.local.",
            "_http._tcp.web.prod.svc.cluster.local.",
            "web.com.svc.cluster.local.",
            "api.github.com.",
            "www.example.org.",
            "s3.amazonaws.com.",
        ];
        let truth = |q: &str| {
            if existing.contains(&q) {
                Answer::Address
            } else {
                Answer::NxDomain
            }
        };
        // (name, upstream queries per getaddrinfo before, after) for glibc and musl alike.
        let cases = [
            ("web", 2, 2),
            ("web.prod", 4, 4),
            ("web.prod.svc", 6, 4),
            ("_http._tcp.web.prod.svc.cluster.local", 2, 2),
            ("web.com", 4, 4),
            ("api.github.com", 10, 4),
            ("www.example.org", 10, 6),
            ("s3.amazonaws.com", 10, 4),
        ];
        for stub in [Stub::Glibc, Stub::Musl] {
            let mut s = ResolverSettings::defaults(stub);
            s.set_ndots(5, stub);
            s.set_search("default.svc.cluster.local svc.cluster.local cluster.local ec2.internal");
            for (name, before, after) in cases {
                let plain = stub.walk(name, Family::Unspec, &s, |q, _| truth(q));
                let mut upstream = 0;
                let short = stub.walk(name, Family::Unspec, &s, |q, t| match p.decide(q, t) {
                    Some(_) => {
                        assert_eq!(truth(q), Answer::NxDomain, "{q} exists but was shortcut");
                        Answer::NxDomain
                    }
                    None => {
                        upstream += 1;
                        truth(q)
                    }
                });
                assert_eq!(plain.result, short.result, "{stub} {name}");
                assert_eq!(
                    (plain.queries.len(), upstream),
                    (before, after),
                    "{stub} {name}"
                );
            }
        }
    }

    /// The policy `ShortcutPolicy::new` builds from a default cluster and these keys.
    fn policy_from_config(zones: &[&str], exempt: &[&str]) -> ShortcutPolicy {
        let c = ClusterConfig::kubernetes("cluster.local");
        let s = ShortcutConfig {
            mode: crate::config::ShortcutMode::Nxdomain,
            zones: zones.iter().map(|z| z.to_string()).collect(),
            kubernetes_schema: true,
            exempt: exempt.iter().map(|z| z.to_string()).collect(),
        };
        ShortcutPolicy::new(&c, &s)
    }

    #[test]
    fn from_config() {
        let p = policy_from_config(&["amazonaws.com"], &["registry.cluster.local"]);
        assert_eq!(
            p.decide("s3.amazonaws.com.svc.cluster.local.", 1)
                .map(|e| e.reason),
            None
        );
        assert_eq!(
            p.decide("sts.us-east-1.amazonaws.com.svc.cluster.local.", 1)
                .map(|e| e.reason),
            Some(Reason::Zone)
        );
    }

    /// Operators' own records under the cluster domain (CoreDNS `hosts`, `file`, `template`)
    /// were answered NXDOMAIN by the schema shortcut.
    #[test]
    fn exempt_names_and_zones_are_never_shortcut() {
        let p = policy_from_config(&[], &["registry.cluster.local", "corp.cluster.local"]);
        for exempt in [
            "registry.cluster.local.",
            "REGISTRY.cluster.local.",
            "db.corp.cluster.local.",
        ] {
            assert_eq!(p.decide(exempt, 1), None, "{exempt}");
        }
        // Still shortcut: names beside the exempt ones.
        assert!(p.decide("registry2.cluster.local.", 1).is_some());
        assert!(p
            .decide("www.example.org.default.svc.cluster.local.", 1)
            .is_some());
    }
}
