//! The advice of a report as words and snippets: the items are computed by the stub model in
//! [`crate::amplify::advice`] and carried in the report (`advice`); this module only says them,
//! for the text and HTML forms alike.

pub use crate::amplify::advice::{registrable_domain, AdviceItem, NdotsAdvice};

use crate::amplify::Report;

/// Wasted share of the queries that reached an upstream (or of all queries when the report
/// has no upstream figures), 0..=1.
pub fn upstream_wasted_share(r: &Report) -> f64 {
    if r.upstream_queries > 0 {
        r.upstream_wasted_queries as f64 / r.upstream_queries as f64
    } else if r.queries > 0 {
        r.wasted_queries as f64 / r.queries as f64
    } else {
        0.0
    }
}

/// The pod `dnsConfig` that sets `ndots`.
pub fn dns_config_snippet(ndots: u32) -> String {
    format!("spec:\n  dnsConfig:\n    options:\n      - name: ndots\n        value: \"{ndots}\"\n")
}

/// The proxy config lines that add `zones` to the shortcut, one zone per line (a long list
/// never overflows a code block).
pub fn shortcut_snippet(zones: &[String]) -> String {
    let mut s = String::from("shortcut:\n  zones:\n");
    for z in zones {
        s.push_str(&format!("    - {z:?}\n"));
    }
    s
}

/// The headline of an ndots item.
pub fn ndots_headline(a: &NdotsAdvice) -> String {
    let who: Vec<String> = a
        .workloads
        .iter()
        .take(3)
        .map(|w| {
            format!(
                "{} ({} of {} queries wasted)",
                w.namespace, w.wasted_queries, w.queries
            )
        })
        .collect();
    let scope = match (&a.scope.workload, &a.scope.namespace) {
        (Some(w), _) => format!("workload {w}, with its own pod DNS config"),
        (None, Some(ns)) => format!("namespace {ns}"),
        (None, None) if who.is_empty() => "the pods".to_string(),
        (None, None) => format!("the worst workloads first: {}", who.join(", ")),
    };
    format!(
        "ndots:{} instead of {} for {} pods ({scope}). Queries per getaddrinfo call (A and \
         AAAA), walked by the {} model with the search list {}; walked: the captured lookups \
         (per type) that sent a search-list candidate, the only ones ndots changes:",
        a.ndots,
        a.current_ndots,
        a.stub,
        a.stub,
        a.search.join(" ")
    )
}

/// Why the ndots is not lower, in one sentence (empty when it is 1).
pub fn ndots_limit(a: &NdotsAdvice) -> Option<String> {
    (!a.limited_by.is_empty()).then(|| {
        format!(
            "Not lower: at ndots:{} {} would resolve elsewhere (or not at all).",
            a.ndots - 1,
            a.limited_by.join(", ")
        )
    })
}

/// A name for a person: relative names without the trailing dot (`cart.shop.svc` would read as
/// an FQDN with one), names that resolved as written with it.
pub fn display_name(name: &str, resolved_by: Option<&str>) -> String {
    if resolved_by == Some("absolute") {
        name.to_string()
    } else {
        name.trim_end_matches('.').to_string()
    }
}
