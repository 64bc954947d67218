//! What to change, computed from a report with the stub model (DESIGN §9 "Report JSON",
//! `advice`): nothing here is a sentence about DNS written by hand; every figure comes from a
//! [`Stub::walk`] of a name the report saw, so `ndots simulate` gives the same numbers.
//!
//! Three remedies, in the order a platform team can apply them:
//! - **FQDN names** (a trailing dot) for the external names that waste most: no search walk.
//! - **A lower ndots**, per stub: for every ndots below the current one, each top name that
//!   resolved after a search walk is walked again (answers: its own resolving name exists,
//!   everything else is NXDOMAIN). A setting is *safe* when every such name still resolves at
//!   the same name; the advice is the safe setting with the fewest queries (weighted by the
//!   name's lookups that sent a search-list candidate, `searched_lookups`: a lookup that sent
//!   only the name as written costs the same at any lower ndots; ties go to the higher ndots,
//!   the smaller change). musl does not fall back to the search list for a
//!   name with ndots or more dots (resolvers.md), so an in-cluster name the report did not see
//!   may break: that caveat comes with the replay command that checks the whole capture.
//! - **`shortcut.zones`**: the registrable domains of the wasteful external names, never the
//!   cluster domain (the schema rule covers it) nor a zone the proxy already has.
//!
//! No ndots advice when the report does not look like Kubernetes traffic (no query carried a
//! cluster suffix) and nobody gave the search list: the model would walk a list the clients
//! never had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::report::Report;
use crate::search::{Answer, Family, ResolverSettings, SearchShape, Stub};

/// Top names walked to pick an ndots (the heaviest by searched lookups among the resolved
/// ones).
const NAMES_WALKED: usize = 50;
/// Names listed per ndots item.
const NAMES_LISTED: usize = 10;

/// One piece of advice (DESIGN §9).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdviceItem {
    Ndots(NdotsAdvice),
    Fqdn { names: Vec<FqdnName> },
    ShortcutZones { zones: Vec<String> },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NdotsAdvice {
    pub scope: Scope,
    pub ndots: u32,
    /// The ndots the clients run with now (as assumed by the report).
    pub current_ndots: u32,
    pub stub: String,
    /// The concrete search list the walks used (the busiest namespace stands for the pods).
    pub search: Vec<String>,
    pub names: Vec<NameClaim>,
    /// Names that would resolve elsewhere one ndots lower (why it is not lower).
    #[serde(default)]
    pub limited_by: Vec<String>,
    /// Namespaces by wasted queries: where the change pays most.
    #[serde(default)]
    pub workloads: Vec<Workload>,
    pub caveats: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Scope {
    pub namespace: Option<String>,
    /// A `--pod-dns-config` workload advised with its own pod DNS config (its ndots, search
    /// list, stub); absent for the cluster-wide item, which then covers only the clients no
    /// workload lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// One name's walk now and after the change (A+AAAA, `getaddrinfo` with `AF_UNSPEC`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NameClaim {
    /// As the application writes it (no trailing dot).
    pub name: String,
    /// The name that answers with addresses (absolute, trailing dot).
    pub resolves_at: String,
    pub queries_now: u32,
    pub queries_after: u32,
    /// Per-type lookups of this name in the report that walked the search list (sent at least
    /// one search-list candidate, `searched_lookups`): the ones the change applies to. A
    /// report without that figure (an older version's) gives all its lookups.
    pub lookups: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FqdnName {
    pub name: String,
    pub wasted_queries: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Workload {
    pub namespace: String,
    pub wasted_queries: u64,
    pub queries: u64,
}

/// How the report's search list was chosen (`search_from`).
pub const SEARCH_ASSUMED: &str = "assumed";
pub const SEARCH_INFERRED: &str = "inferred";
pub const SEARCH_GIVEN: &str = "given";
pub const SEARCH_CONFIG: &str = "config";

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

fn dots(name: &str) -> usize {
    name.trim_end_matches('.').matches('.').count()
}

/// `name` equals `zone` or lies under it (label boundary).
fn under(name: &str, zone: &str) -> bool {
    let (n, z) = (name.trim_end_matches('.'), zone.trim_end_matches('.'));
    !z.is_empty() && (n == z || n.ends_with(&format!(".{z}")))
}

/// The report's search list as a shape: the cluster's entries (`*.svc.D`, `svc.D`, `D`) and the
/// rest as node domains, as `analyze` reads `--search`.
fn shape(r: &Report) -> Option<SearchShape> {
    let domain = r.cluster_domain.as_deref()?;
    if r.search.is_empty() {
        return None;
    }
    let svc = format!("svc.{domain}");
    let (cluster, node): (Vec<&String>, Vec<&String>) = r.search.iter().partition(|e| {
        let e = e.trim_end_matches('.');
        e == domain || e == svc || e.strip_prefix("*.") == Some(svc.as_str())
    });
    Some(SearchShape::from_parts(domain, &cluster, &node))
}

/// Did any query carry a cluster suffix?
fn kubernetes_shaped(r: &Report) -> bool {
    let s = &r.by_suffix;
    s.namespace + s.svc + s.cluster > 0
}

/// The advice for a report (empty when nothing is wasted).
pub fn compute(r: &Report) -> Vec<AdviceItem> {
    let mut out = Vec::new();
    if r.wasted_queries == 0 {
        return out;
    }
    let domain = r.cluster_domain.as_deref().unwrap_or("");
    let external: Vec<(&str, u64)> = r
        .top_names
        .iter()
        .filter(|n| n.wasted_queries > 0 && n.resolved_by.as_deref() == Some("absolute"))
        // In-cluster names written in full but without the dot count too: the dot saves
        // their walk just the same.
        .filter(|n| dots(&n.name) >= 1)
        .map(|n| (n.name.as_str(), n.wasted_queries))
        .collect();
    if !external.is_empty() {
        out.push(AdviceItem::Fqdn {
            names: external
                .iter()
                .take(10)
                .map(|(n, w)| FqdnName {
                    name: n.to_string(),
                    wasted_queries: *w,
                })
                .collect(),
        });
    }
    let search_known = matches!(r.search_from.as_deref(), Some(SEARCH_GIVEN | SEARCH_CONFIG));
    if search_known || kubernetes_shaped(r) {
        out.extend(ndots_advice(r).into_iter().map(AdviceItem::Ndots));
    }
    let mut zones: BTreeMap<String, u64> = BTreeMap::new();
    for (n, w) in &external {
        if let Some(z) = registrable_domain(n) {
            let cluster = !domain.is_empty() && (under(&z, domain) || under(domain, &z));
            let configured = r.configured_zones.iter().any(|c| under(&z, c));
            if !cluster && !configured {
                *zones.entry(z).or_default() += w;
            }
        }
    }
    let mut zones: Vec<(String, u64)> = zones.into_iter().collect();
    zones.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if !zones.is_empty() {
        out.push(AdviceItem::ShortcutZones {
            zones: zones.into_iter().take(8).map(|(z, _)| z).collect(),
        });
    }
    out
}

/// A resolved top name: as written, where it resolved, its lookups that walked the search list.
struct Seen {
    name: String,
    resolves_at: String,
    lookups: u64,
}

/// Walk `name` (A+AAAA) where only `resolves_at` has addresses: queries sent and the result.
pub fn walk_count(
    stub: Stub,
    ndots: u32,
    search: &[String],
    name: &str,
    resolves_at: &str,
) -> (u32, Option<String>) {
    let mut s = ResolverSettings::defaults(stub);
    s.search = search.to_vec();
    walk_with(stub, &s, ndots, name, resolves_at)
}

/// [`walk_count`] with all of a resolv.conf's settings (`base`), at `ndots`.
pub fn walk_with(
    stub: Stub,
    base: &ResolverSettings,
    ndots: u32,
    name: &str,
    resolves_at: &str,
) -> (u32, Option<String>) {
    let mut s = base.clone();
    s.set_ndots(ndots, stub);
    let w = stub.walk(name, Family::Unspec, &s, |q, _| {
        if q == resolves_at {
            Answer::Address
        } else {
            Answer::NxDomain
        }
    });
    (w.queries.len() as u32, w.result)
}

fn ndots_advice(r: &Report) -> Vec<NdotsAdvice> {
    let current = r.ndots.unwrap_or(5);
    let Some(shape) = shape(r) else {
        return Vec::new();
    };
    if current <= 1 {
        return Vec::new();
    }
    let ns = busiest_namespace(r).unwrap_or_else(|| "default".into());
    let search = shape.search_list(Some(&ns));
    let base = |stub: Stub| {
        let mut s = ResolverSettings::defaults(stub);
        s.set_ndots(current, stub);
        s.search = search.clone();
        s
    };
    let stubs = report_stubs(r);
    advise(
        r,
        &shape,
        &ns,
        &stubs,
        base,
        &Scope {
            namespace: None,
            workload: None,
        },
        None,
    )
}

/// The ndots advice for one `--pod-dns-config` workload, from the report of its clients alone
/// (`r`, read with the cluster's search list `cluster`): walked with the resolv.conf its pod
/// spec gives it, from its own ndots (DESIGN §9: every claim is the model's walk, and
/// `ndots simulate --pod-dns-config FILE --workload NAME --ndots N` prints it).
pub fn workload_ndots_advice(
    r: &Report,
    w: &crate::search::workloads::Workload,
    cluster: &crate::config::ClusterConfig,
    file: &str,
) -> Vec<NdotsAdvice> {
    if r.wasted_queries == 0 {
        return Vec::new();
    }
    let Some(shape) = shape(r) else {
        return Vec::new();
    };
    let ns = w
        .pod
        .namespace
        .clone()
        .or_else(|| busiest_namespace(r))
        .unwrap_or_else(|| "default".into());
    let stubs = match w.stub {
        Some(s) => vec![s],
        None => report_stubs(r),
    };
    let base = |stub: Stub| w.settings(stub, Some(&ns), cluster, None);
    let check = format!(
        "every figure is the {{stub}} model's walk with this workload's pod DNS config: check          with `ndots simulate NAME --pod-dns-config {file} --workload {} --stub {{stub}}{}          --ndots {{ndots}} --exists RESOLVES_AT`{}",
        w.name,
        if w.pod.namespace.is_none() {
            format!(" --namespace {ns}")
        } else {
            String::new()
        },
        if cluster.node_search.is_empty() {
            String::new()
        } else {
            format!(
                " (and --resolv-conf with the node's `search {}`)",
                cluster.node_search.join(" ")
            )
        }
    );
    advise(
        r,
        &shape,
        &ns,
        &stubs,
        base,
        &Scope {
            namespace: w.pod.namespace.clone(),
            workload: Some(w.name.clone()),
        },
        Some(&check),
    )
}

/// The stubs to advise for: the report's, else glibc and musl (the libc is not known).
fn report_stubs(r: &Report) -> Vec<Stub> {
    if r.stubs.is_empty() {
        vec![Stub::Glibc, Stub::Musl]
    } else {
        let mut v: Vec<Stub> = r.stubs.iter().filter_map(|s| s.parse().ok()).collect();
        v.dedup();
        v
    }
}

/// The namespace with the most lookups among the top clients.
fn busiest_namespace(r: &Report) -> Option<String> {
    let mut ns_lookups: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &r.top_clients {
        if let Some(ns) = c.namespace.as_deref() {
            *ns_lookups.entry(ns).or_default() += c.lookups;
        }
    }
    ns_lookups
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(n, _)| n.to_string())
}

/// The ndots items for `stubs`: the top resolved names of `r` walked from `base(stub)` (the
/// clients' resolver settings now, their ndots the current one) at every lower ndots.
/// `check`: a caveat that says how to check the figures (`{stub}`, `{ndots}` filled in).
#[allow(clippy::too_many_arguments)]
fn advise(
    r: &Report,
    shape: &SearchShape,
    ns: &str,
    stubs: &[Stub],
    base: impl Fn(Stub) -> ResolverSettings,
    scope: &Scope,
    check: Option<&str>,
) -> Vec<NdotsAdvice> {
    // `ns` (the busiest namespace) stands for the pods: the walk's length does not depend on
    // which.
    let suffix_of = |slot: &str| -> Option<String> {
        use crate::search::SuffixKind;
        let kind = match slot {
            "namespace" => SuffixKind::Namespace,
            "svc" => SuffixKind::Svc,
            "cluster" => SuffixKind::Cluster,
            "node" => SuffixKind::Node,
            _ => return None,
        };
        (0..shape.len())
            .find(|&i| shape.kind(i) == kind)
            .and_then(|i| shape.suffix(i, Some(ns)))
    };
    let mut seen: Vec<Seen> = Vec::new();
    for n in &r.top_names {
        let bare = n.name.trim_end_matches('.');
        if bare.is_empty() {
            continue;
        }
        let resolves_at = match n.resolved_by.as_deref() {
            Some("absolute") => format!("{bare}."),
            Some(slot) => match suffix_of(slot) {
                Some(s) => format!("{bare}.{s}."),
                None => continue,
            },
            None => continue,
        };
        // Lookups that sent only the name as written cost the same at any lower ndots: they
        // neither gain nor break, so they are not priced (unknown in an older report: all).
        let lookups = n.searched_lookups.unwrap_or(n.lookups);
        if lookups == 0 {
            continue;
        }
        seen.push(Seen {
            name: bare.to_string(),
            resolves_at,
            lookups,
        });
    }
    seen.sort_by(|a, b| b.lookups.cmp(&a.lookups).then(a.name.cmp(&b.name)));
    seen.truncate(NAMES_WALKED);
    if seen.is_empty() {
        return Vec::new();
    }

    let mut workloads: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in &r.top_clients {
        if let Some(ns) = &c.namespace {
            let e = workloads.entry(ns.clone()).or_default();
            e.0 += c.wasted_queries;
            e.1 += c.queries;
        }
    }
    let mut workloads: Vec<Workload> = workloads
        .into_iter()
        .filter(|(_, (w, _))| *w > 0)
        .map(|(namespace, (wasted_queries, queries))| Workload {
            namespace,
            wasted_queries,
            queries,
        })
        .collect();
    workloads.sort_by(|a, b| {
        b.wasted_queries
            .cmp(&a.wasted_queries)
            .then(a.namespace.cmp(&b.namespace))
    });
    workloads.truncate(5);

    let libc_unknown = r.stubs.is_empty();
    let musl_present = stubs.iter().any(|s| s.is_musl());
    let mut out = Vec::new();
    for &stub in stubs {
        let base = base(stub);
        let current = base.ndots;
        if current <= 1 {
            continue;
        }
        let search: Vec<String> = base
            .search
            .iter()
            .map(|e| if e.is_empty() { ".".into() } else { e.clone() })
            .collect();
        // Per ndots: (queries, result) of every name.
        let walks: Vec<Vec<(u32, Option<String>)>> = (1..=current)
            .map(|n| {
                seen.iter()
                    .map(|s| walk_with(stub, &base, n, &s.name, &s.resolves_at))
                    .collect()
            })
            .collect();
        let now = &walks[current as usize - 1];
        let safe = |n: u32| -> bool {
            walks[n as usize - 1]
                .iter()
                .zip(now)
                .all(|(a, b)| a.1 == b.1)
        };
        let cost = |n: u32| -> u64 {
            walks[n as usize - 1]
                .iter()
                .zip(&seen)
                .map(|(w, s)| u64::from(w.0) * s.lookups)
                .sum()
        };
        let best = (1..=current)
            .filter(|&n| safe(n))
            .min_by(|&a, &b| cost(a).cmp(&cost(b)).then(b.cmp(&a)))
            .unwrap_or(current);
        if best == current || cost(best) >= cost(current) {
            continue;
        }
        let after = &walks[best as usize - 1];
        let mut names: Vec<NameClaim> = seen
            .iter()
            .zip(now.iter().zip(after))
            .filter(|(_, (a, b))| a.0 != b.0)
            .map(|(s, (a, b))| NameClaim {
                name: s.name.clone(),
                resolves_at: s.resolves_at.clone(),
                queries_now: a.0,
                queries_after: b.0,
                lookups: s.lookups,
            })
            .collect();
        // The biggest saving first; names that cost more after come too (honest figures).
        names.sort_by(|a, b| {
            let gain = |c: &NameClaim| {
                (i64::from(c.queries_now) - i64::from(c.queries_after)) * c.lookups as i64
            };
            gain(b).cmp(&gain(a)).then(a.name.cmp(&b.name))
        });
        let mut listed: Vec<NameClaim> = names.iter().take(NAMES_LISTED).cloned().collect();
        for n in names.iter().skip(NAMES_LISTED) {
            if n.queries_after > n.queries_now && listed.len() < NAMES_LISTED + 3 {
                listed.push(n.clone());
            }
        }
        let limited_by: Vec<String> = if best > 1 {
            seen.iter()
                .zip(walks[best as usize - 2].iter().zip(now))
                .filter(|(_, (a, b))| a.1 != b.1)
                .take(3)
                .map(|(s, _)| s.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let mut caveats = Vec::new();
        if stub.is_musl() {
            caveats.push(format!(
                "musl (Alpine) sends a name with {best} or more dots only as written, never \
                 with the search list: an in-cluster name written with {best}+ dots that this \
                 report did not see fails instead of resolving; check the whole capture with \
                 `ndots replay CAPTURE --ndots {best} --stub musl`"
            ));
        } else {
            caveats.push(format!(
                "{stub} tries a name with {best} or more dots as written first: an in-cluster \
                 name written that way costs one more query per type before the search list \
                 finds it"
            ));
            if libc_unknown || musl_present {
                caveats.push(format!(
                    "the clients' libc is {}: musl (Alpine) stops at the name as written, so \
                     check with `ndots replay CAPTURE --ndots {best} --stub musl` before \
                     rolling out",
                    if libc_unknown {
                        "not known from this report"
                    } else {
                        "musl for some of them"
                    }
                ));
            }
        }
        if let Some(c) = check {
            caveats.push(
                c.replace("{stub}", stub.as_str())
                    .replace("{ndots}", &best.to_string()),
            );
        }
        out.push(NdotsAdvice {
            scope: scope.clone(),
            ndots: best,
            current_ndots: current,
            stub: stub.as_str().to_string(),
            search: search.clone(),
            names: listed,
            limited_by,
            workloads: workloads.clone(),
            caveats,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::sample_report;

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

    fn ndots_items(r: &Report) -> Vec<NdotsAdvice> {
        compute(r)
            .into_iter()
            .filter_map(|a| match a {
                AdviceItem::Ndots(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ndots_is_computed_per_stub_and_musl_needs_more_than_glibc() {
        let r = sample_report();
        let items = ndots_items(&r);
        let glibc = items
            .iter()
            .find(|i| i.stub == "glibc")
            .expect("glibc item");
        let musl = items.iter().find(|i| i.stub == "musl").expect("musl item");
        // `web.prod` (one dot) resolves through the search list: musl at ndots:1 would send
        // it only as written (NXDOMAIN), so musl needs 2.
        assert_eq!(musl.ndots, 2, "{musl:?}");
        assert!(musl.limited_by.contains(&"web.prod".to_string()));
        assert!(glibc.ndots <= musl.ndots);
        // Every claim is the model's own walk.
        for item in [glibc, musl] {
            let stub: Stub = item.stub.parse().unwrap();
            for n in &item.names {
                let now = walk_count(stub, 5, &item.search, &n.name, &n.resolves_at);
                let after = walk_count(stub, item.ndots, &item.search, &n.name, &n.resolves_at);
                assert_eq!((n.queries_now, n.queries_after), (now.0, after.0), "{n:?}");
                assert_eq!(now.1, after.1);
            }
            assert!(item.caveats.iter().any(|c| c.contains("--stub musl")));
        }
        // api.github.com has two dots: ndots:2 sends it as written first.
        let gh = musl
            .names
            .iter()
            .find(|n| n.name == "api.github.com")
            .unwrap();
        assert!(gh.queries_after < gh.queries_now);
    }

    /// A lower ndots changes only the lookups that walked the search list: the advice weighs
    /// a name by `searched_lookups`, leaves out a name none of whose lookups walked, and
    /// falls back to `lookups` for a report without the figure (an older version's).
    #[test]
    fn ndots_advice_weighs_only_the_lookups_that_walked_the_search_list() {
        let r = sample_report();
        let gh = r
            .top_names
            .iter()
            .position(|n| n.name == "api.github.com.")
            .unwrap();
        let claim = |r: &Report| -> Vec<u64> {
            ndots_items(r)
                .iter()
                .flat_map(|i| &i.names)
                .filter(|n| n.name == "api.github.com")
                .map(|n| n.lookups)
                .collect()
        };
        let walked = r.top_names[gh].searched_lookups.unwrap();
        assert!(walked > 0);
        assert!(claim(&r).iter().all(|&l| l == walked) && !claim(&r).is_empty());

        // As many lookups again that sent only `api.github.com.` as written.
        let mut more = r.clone();
        more.top_names[gh].lookups += walked;
        assert_eq!(claim(&more), claim(&r));

        let mut unknown = more.clone();
        unknown.top_names[gh].searched_lookups = None;
        assert!(claim(&unknown).iter().all(|&l| l == 2 * walked));

        let mut never = r.clone();
        never.top_names[gh].searched_lookups = Some(0);
        assert!(claim(&never).is_empty(), "{:#?}", ndots_items(&never));

        let mut none_walked = r.clone();
        for n in &mut none_walked.top_names {
            n.searched_lookups = Some(0);
        }
        assert!(ndots_items(&none_walked).is_empty());
    }

    #[test]
    fn no_ndots_advice_on_traffic_without_cluster_suffixes_and_no_search_list() {
        let mut r = sample_report();
        r.by_suffix.namespace = 0;
        r.by_suffix.svc = 0;
        r.by_suffix.cluster = 0;
        r.search_from = Some(SEARCH_ASSUMED.into());
        assert!(ndots_items(&r).is_empty());
        r.search_from = Some(SEARCH_GIVEN.into());
        assert!(!ndots_items(&r).is_empty());
    }

    #[test]
    fn shortcut_zones_never_hold_the_cluster_domain_or_configured_zones() {
        let mut r = sample_report();
        // A pod asking for a Service by its full name without the trailing dot.
        let mut k = r.top_names[0].clone();
        k.name = "kubernetes.default.svc.cluster.local.".into();
        r.top_names.push(k);
        let zones = |r: &Report| -> Vec<String> {
            compute(r)
                .into_iter()
                .find_map(|a| match a {
                    AdviceItem::ShortcutZones { zones } => Some(zones),
                    _ => None,
                })
                .unwrap_or_default()
        };
        assert!(!zones(&r).iter().any(|z| z.contains("cluster.local")));
        assert_eq!(zones(&r), ["github.com"]);
        r.configured_zones = vec!["github.com".into()];
        assert!(zones(&r).is_empty());
    }
}
