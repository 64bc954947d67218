//! What to change, worked out from a report: used by the text and HTML forms alike.
//!
//! Three remedies, in the order a platform team can apply them:
//! - **FQDN names** (a trailing dot) for the external names that waste most: no search walk at
//!   all, no risk to anything else.
//! - **Lower ndots** for the worst workloads (pod `dnsConfig`): the smallest ndots that keeps
//!   every in-cluster name this report saw resolving through the search list is one more than
//!   the most dots such a name has (`web` -> 1, `web.prod` -> 2). The consequence: names with at
//!   least that many dots are tried as written first, so an in-cluster name written with more
//!   dots (`web.prod.svc`) costs one query to the upstream before the search list.
//! - **`shortcut.zones`**: the registrable domains of the wasteful external names, so the proxy
//!   answers their expansions locally whatever the pods do.

use std::collections::BTreeMap;

use crate::amplify::Report;

/// Advice derived from a report.
#[derive(Clone, Debug, PartialEq)]
pub struct Advice {
    /// Wasted share of the queries that reached an upstream (or of all queries when the report
    /// has no upstream figures), 0..=1.
    pub upstream_wasted_share: f64,
    /// The ndots value that keeps the in-cluster names seen working; `None` when lowering
    /// would not help (already 1) or nothing was seen.
    pub ndots: Option<u32>,
    /// In-cluster names seen with the most dots (why `ndots` is not lower).
    pub longest_cluster_names: Vec<String>,
    /// Namespaces ranked by wasted queries: `(namespace, wasted, queries)`.
    pub workloads: Vec<(String, u64, u64)>,
    /// External names worth writing as FQDNs, with their wasted queries.
    pub fqdn: Vec<(String, u64)>,
    /// Zones worth adding to `shortcut.zones`, with the wasted queries they cover.
    pub zones: Vec<(String, u64)>,
}

/// Second-level labels under which registrations happen one level down (`example.co.uk`).
/// A short list rather than the Public Suffix List: the advice only needs a good zone, and a
/// zone one label too high still works for `shortcut.zones` (it is matched by suffix).
const SECOND_LEVEL: &[&str] = &["co", "com", "net", "org", "gov", "ac", "edu", "ne", "or"];

/// The registrable domain of an external name (`api.github.com.` -> `github.com`).
pub fn registrable_domain(name: &str) -> Option<String> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let n = labels.len();
    let take = if n >= 3 && labels[n - 1].len() == 2 && SECOND_LEVEL.contains(&labels[n - 2]) {
        3
    } else {
        2
    };
    Some(labels[n - take..].join("."))
}

fn dots(name: &str) -> u32 {
    name.trim_end_matches('.').matches('.').count() as u32
}

/// Is this top name one that lives in the cluster (resolved through a search suffix other than
/// the node's)?
fn in_cluster(resolved_by: Option<&str>) -> bool {
    matches!(resolved_by, Some("namespace" | "svc" | "cluster" | "other"))
}

pub fn advise(r: &Report) -> Advice {
    let upstream_wasted_share = if r.upstream_queries > 0 {
        r.upstream_wasted_queries as f64 / r.upstream_queries as f64
    } else if r.queries > 0 {
        r.wasted_queries as f64 / r.queries as f64
    } else {
        0.0
    };

    let cluster: Vec<&str> = r
        .top_names
        .iter()
        .filter(|n| in_cluster(n.resolved_by.as_deref()))
        .map(|n| n.name.as_str())
        .collect();
    let max_dots = cluster.iter().map(|n| dots(n)).max().unwrap_or(0);
    let ndots = (max_dots + 1).max(1);
    let longest_cluster_names = cluster
        .iter()
        .filter(|n| dots(n) == max_dots)
        .take(3)
        .map(|n| n.to_string())
        .collect();

    let mut by_ns: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in &r.top_clients {
        let ns = c.namespace.clone().unwrap_or_else(|| "(unknown)".into());
        let e = by_ns.entry(ns).or_default();
        e.0 += c.wasted_queries;
        e.1 += c.queries;
    }
    let mut workloads: Vec<(String, u64, u64)> = by_ns
        .into_iter()
        .filter(|(_, (w, _))| *w > 0)
        .map(|(ns, (w, q))| (ns, w, q))
        .collect();
    workloads.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    workloads.truncate(5);

    // External: resolved as written, or never resolved and not a cluster name.
    let external: Vec<(&str, u64)> = r
        .top_names
        .iter()
        .filter(|n| n.wasted_queries > 0)
        .filter(|n| match n.resolved_by.as_deref() {
            Some("absolute") => true,
            None => dots(&n.name) >= 1 && !n.name.contains(".svc."),
            _ => false,
        })
        .map(|n| (n.name.as_str(), n.wasted_queries))
        .collect();
    let fqdn = external
        .iter()
        .take(10)
        .map(|(n, w)| (n.to_string(), *w))
        .collect();
    let mut zones: BTreeMap<String, u64> = BTreeMap::new();
    for (n, w) in &external {
        if let Some(z) = registrable_domain(n) {
            *zones.entry(z).or_default() += w;
        }
    }
    let mut zones: Vec<(String, u64)> = zones.into_iter().collect();
    zones.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    zones.truncate(8);

    Advice {
        upstream_wasted_share,
        ndots: (ndots < 5 && r.wasted_queries > 0).then_some(ndots),
        longest_cluster_names,
        workloads,
        fqdn,
        zones,
    }
}

/// The pod `dnsConfig` that sets `ndots`.
pub fn dns_config_snippet(ndots: u32) -> String {
    format!("spec:\n  dnsConfig:\n    options:\n      - name: ndots\n        value: \"{ndots}\"\n")
}

/// The proxy config lines that add `zones` to the shortcut.
pub fn shortcut_snippet(zones: &[(String, u64)]) -> String {
    let list: Vec<String> = zones.iter().map(|(z, _)| format!("{z:?}")).collect();
    format!("shortcut:\n  zones: [{}]\n", list.join(", "))
}

/// The consequence of lowering ndots to `n`, in one sentence.
pub fn ndots_consequence(n: u32) -> String {
    format!(
        "with ndots:{n}, names with {n} or more dots are sent as written first: external names \
         resolve in one query, and an in-cluster name written with {n}+ dots (e.g. \
         `web.prod.svc`) costs one extra upstream query before the search list finds it; \
         write such names in full with a trailing dot"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_domains() {
        assert_eq!(
            registrable_domain("api.github.com.").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            registrable_domain("s3.eu-west-1.amazonaws.com").as_deref(),
            Some("amazonaws.com")
        );
        assert_eq!(
            registrable_domain("www.bbc.co.uk.").as_deref(),
            Some("bbc.co.uk")
        );
        assert_eq!(registrable_domain("localhost."), None);
    }
}
