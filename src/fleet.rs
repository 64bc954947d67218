//! The fleet report (DESIGN §9 "Fleet"): `ndots report --prometheus URL` builds the report from
//! the proxies' and collectors' series in Prometheus instead of asking every node.
//!
//! Each figure is one instant query (`/api/v1/query`), summed over every scraped instance that
//! matches `--selector`; with `--window W` each counter is `increase(...[W])` (Prometheus
//! extrapolates, so figures are rounded to whole numbers). Without a window the counters are
//! the totals since each process started: the sum of their `/report`s.
//!
//! What metrics carry, and so what this report has: lookups, queries and wasted queries (in
//! total, by type, by suffix, by namespace), outcomes, and the queries-per-lookup histogram at
//! the resolution of its buckets (1..6 exact; 8, 10, 12, 16 are bucket bounds, `17` stands for
//! more than 16). Top names and clients are not metrics (unbounded labels): empty here.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};

use crate::amplify::report::{NamespaceFigures, SuffixFigures, TypeFigures};
use crate::amplify::{Aggregate, Report};
use crate::metrics as m;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The `data.result` of a Prometheus instant-query answer (`resultType: vector`).
pub fn parse_vector(json: &str) -> anyhow::Result<Vec<Sample>> {
    let v: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    if v["status"] != "success" {
        bail!(
            "Prometheus answered {}: {}",
            v["errorType"].as_str().unwrap_or("an error"),
            v["error"].as_str().unwrap_or("")
        );
    }
    if v["data"]["resultType"] != "vector" {
        bail!(
            "expected an instant vector, got {}",
            v["data"]["resultType"]
        );
    }
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let labels = r["metric"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let value = r["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("a sample without a numeric value: {r}"))?;
        out.push(Sample { labels, value });
    }
    Ok(out)
}

/// `sum by (BY) (METRIC{SELECTOR})`, or of `increase(...[WINDOW])`.
pub fn promql(metric: &str, by: &str, selector: Option<&str>, window: Option<&str>) -> String {
    let sel = selector.map(|s| format!("{{{s}}}")).unwrap_or_default();
    match window {
        Some(w) => format!("sum by ({by}) (increase({metric}{sel}[{w}]))"),
        None => format!("sum by ({by}) ({metric}{sel})"),
    }
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// Build the report with `query` answering one PromQL instant query at a time.
pub fn report(
    query: &mut dyn FnMut(&str) -> anyhow::Result<Vec<Sample>>,
    selector: Option<&str>,
    window: Option<(&str, f64)>,
    source: &str,
) -> anyhow::Result<Report> {
    let w = window.map(|(w, _)| w);
    let mut by = |metric: &str, label: &str| -> anyhow::Result<BTreeMap<String, u64>> {
        let q = promql(metric, label, selector, w);
        let samples = query(&q).with_context(|| format!("query {q}"))?;
        let mut out = BTreeMap::new();
        for s in samples {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0) += count(s.value);
        }
        Ok(out)
    };
    let lookups_by_type = by(m::LOOKUPS, "type")?;
    let outcomes = by(m::LOOKUPS, "outcome")?;
    let queries_by_type = by(&format!("{}_sum", m::LOOKUP_QUERIES), "type")?;
    let wasted_by_type = by(m::WASTED_QUERIES_BY_TYPE, "type")?;
    let wasted_by_suffix = by(m::WASTED_QUERIES, "suffix")?;
    let queries_by_suffix = by(m::SEARCH_QUERIES, "suffix")?;
    let buckets = by(&format!("{}_bucket", m::LOOKUP_QUERIES), "le")?;
    let ns_lookups = by(m::NAMESPACE_LOOKUPS, "namespace")?;
    let ns_queries = by(m::NAMESPACE_QUERIES, "namespace")?;
    let ns_wasted = by(m::NAMESPACE_WASTED, "namespace")?;

    let mut r = Aggregate::new(1).to_report(source, window.map_or(0.0, |(_, s)| s));
    r.top_complete = false;
    r.lookups = lookups_by_type.values().sum();
    r.queries = queries_by_type.values().sum();
    r.wasted_queries = wasted_by_type.values().sum();
    let types: std::collections::BTreeSet<&String> = lookups_by_type
        .keys()
        .chain(queries_by_type.keys())
        .chain(wasted_by_type.keys())
        .collect();
    r.by_type = types
        .into_iter()
        .map(|t| {
            let get = |m: &BTreeMap<String, u64>| m.get(t).copied().unwrap_or(0);
            let f = TypeFigures {
                queries: get(&queries_by_type),
                lookups: get(&lookups_by_type),
                wasted_queries: get(&wasted_by_type),
            };
            (t.clone(), f)
        })
        .filter(|(_, f)| f.lookups + f.queries > 0)
        .collect();
    r.outcomes = outcomes.into_iter().filter(|(_, n)| *n > 0).collect();
    r.by_suffix = suffixes(&queries_by_suffix);
    r.wasted_by_suffix = suffixes(&wasted_by_suffix);
    r.amplification.histogram = histogram(&buckets);
    let rows = &r.amplification.histogram;
    r.amplification.mean = if r.lookups == 0 {
        0.0
    } else {
        r.queries as f64 / r.lookups as f64
    };
    let total: u64 = rows.iter().map(|x| x[1]).sum();
    let quantile = |p: f64| {
        let want = (p * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        rows.iter()
            .find(|x| {
                seen += x[1];
                seen >= want
            })
            .map_or(0, |x| x[0])
    };
    if total > 0 {
        r.amplification.p50 = quantile(0.5);
        r.amplification.p90 = quantile(0.9);
        r.amplification.p99 = quantile(0.99);
        r.amplification.max = rows.last().map_or(0, |x| x[0]);
    }
    let mut ns: Vec<NamespaceFigures> = ns_lookups
        .iter()
        .map(|(n, &lookups)| NamespaceFigures {
            namespace: n.clone(),
            lookups,
            queries: ns_queries.get(n).copied().unwrap_or(0),
            wasted_queries: ns_wasted.get(n).copied().unwrap_or(0),
        })
        .filter(|f| f.lookups > 0)
        .collect();
    ns.sort_by(|a, b| {
        (b.wasted_queries, b.queries, &a.namespace).cmp(&(
            a.wasted_queries,
            a.queries,
            &b.namespace,
        ))
    });
    r.namespaces = ns;
    Ok(r)
}

fn suffixes(m: &BTreeMap<String, u64>) -> SuffixFigures {
    let g = |k: &str| m.get(k).copied().unwrap_or(0);
    SuffixFigures {
        namespace: g("namespace"),
        svc: g("svc"),
        cluster: g("cluster"),
        node: g("node"),
        absolute: g("absolute"),
        other: g("other"),
    }
}

/// Cumulative `le` buckets to `[queries_per_lookup, lookups]` rows (non-zero only). A bucket's
/// row is its upper bound; `+Inf` beyond 16 is row 17.
fn histogram(buckets: &BTreeMap<String, u64>) -> Vec<[u64; 2]> {
    let mut b: Vec<(f64, u64)> = buckets
        .iter()
        .filter_map(|(le, &n)| {
            let v = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()?
            };
            Some((v, n))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rows = Vec::new();
    let mut prev = 0u64;
    let mut prev_bound = 0.0;
    for (bound, cum) in b {
        let n = cum.saturating_sub(prev);
        prev = prev.max(cum);
        let row = if bound.is_finite() {
            bound.round() as u64
        } else {
            prev_bound as u64 + 1
        };
        if bound.is_finite() {
            prev_bound = bound;
        }
        if n > 0 {
            rows.push([row, n]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_become_rows() {
        let b: BTreeMap<String, u64> = [
            ("1", 2),
            ("2", 2),
            ("3", 2),
            ("4", 7),
            ("5", 7),
            ("6", 7),
            ("8", 8),
            ("10", 8),
            ("12", 8),
            ("16", 8),
            ("+Inf", 9),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(histogram(&b), vec![[1, 2], [4, 5], [8, 1], [17, 1]]);
    }

    #[test]
    fn promql_with_and_without_window() {
        assert_eq!(
            promql("ndots_lookups_total", "type", Some("job=\"ndots\""), None),
            "sum by (type) (ndots_lookups_total{job=\"ndots\"})"
        );
        assert_eq!(
            promql("ndots_lookups_total", "type", None, Some("1h")),
            "sum by (type) (increase(ndots_lookups_total[1h]))"
        );
    }

    #[test]
    fn prometheus_errors_and_vectors() {
        assert!(parse_vector(r#"{"status":"error","errorType":"bad_data","error":"x"}"#).is_err());
        let v = parse_vector(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"type":"A"},"value":[1,"3"]}]}}"#,
        )
        .unwrap();
        assert_eq!(v[0].labels["type"], "A");
        assert_eq!(v[0].value, 3.0);
        assert!(parse_vector("garbage").is_err());
    }
}
