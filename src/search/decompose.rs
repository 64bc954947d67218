//! Decomposing a query name into the name the application meant (the base) and the search
//! domain a stub appended (DESIGN §1 "base", §3 "Shortcuts", §4 suffix labels).
//!
//! The pod's search list is known only as a shape: `*.svc.<cluster domain>` stands for
//! whatever namespace the pod is in. A name can be read several ways:
//! `web.prod.svc.cluster.local` is `web` + `prod.svc.cluster.local` (namespace suffix) or
//! `web.prod` + `svc.cluster.local` or `web.prod.svc` + `cluster.local`, so every reading is
//! returned, longest suffix first (the order a stub would have sent them).
//!
//! This runs per query in the proxy and per event in the tracker: matching walks the label
//! boundaries of the name once and compares against the (few) patterns without allocating.

use crate::config::ClusterConfig;

use super::name::is_rfc1123_label;

/// Which search domain a suffix is. The words are metric labels (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuffixKind {
    /// `<ns>.svc.<cluster domain>`.
    Namespace,
    /// `svc.<cluster domain>`.
    Svc,
    /// `<cluster domain>`.
    Cluster,
    /// One of the node's search domains (`cluster.node_search`).
    Node,
    /// Any other entry of `cluster.search`.
    Other,
}

impl SuffixKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SuffixKind::Namespace => "namespace",
            SuffixKind::Svc => "svc",
            SuffixKind::Cluster => "cluster",
            SuffixKind::Node => "node",
            SuffixKind::Other => "other",
        }
    }
}

/// One entry of the search list shape.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    /// For a `*.rest` entry, `rest`; otherwise the whole domain. Lowercase, no trailing dot.
    tail: String,
    wildcard: bool,
    kind: SuffixKind,
}

/// The shape of a pod's search list: `cluster.search` (with `*` for the namespace label) then
/// `cluster.node_search`, in the order a stub tries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchShape {
    domain: String,
    patterns: Vec<Pattern>,
}

/// One reading of a query name as `base.suffix`. Slices of the name given to
/// [`SearchShape::decompose`], without trailing dots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decomposition<'a> {
    pub base: &'a str,
    pub suffix: &'a str,
    pub kind: SuffixKind,
    /// The namespace label, when the suffix matched a `*` entry.
    pub namespace: Option<&'a str>,
    /// Position of the matched entry in the search list shape.
    pub index: usize,
}

impl SearchShape {
    /// Build from the cluster section of the config. Duplicate entries are dropped (a stub
    /// sends the same name twice, but it is one suffix).
    pub fn new(cluster: &ClusterConfig) -> Self {
        Self::from_parts(&cluster.domain, &cluster.search, &cluster.node_search)
    }

    /// Build from a cluster domain, the pod search entries (`*` = namespace) and node domains.
    pub fn from_parts<S: AsRef<str>>(domain: &str, search: &[S], node_search: &[S]) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let svc = format!("svc.{domain}");
        let mut patterns: Vec<Pattern> = Vec::new();
        let entries = search
            .iter()
            .map(|s| (s.as_ref(), false))
            .chain(node_search.iter().map(|s| (s.as_ref(), true)));
        for (entry, node) in entries {
            let e = entry.trim_end_matches('.').to_ascii_lowercase();
            let (tail, wildcard) = match e.strip_prefix("*.") {
                Some(t) => (t.to_string(), true),
                None => (e, false),
            };
            let kind = if node {
                SuffixKind::Node
            } else if wildcard && tail == svc {
                SuffixKind::Namespace
            } else if !wildcard && tail == svc {
                SuffixKind::Svc
            } else if !wildcard && tail == domain {
                SuffixKind::Cluster
            } else {
                SuffixKind::Other
            };
            let p = Pattern {
                tail,
                wildcard,
                kind,
            };
            if !patterns
                .iter()
                .any(|q| q.tail == p.tail && q.wildcard == p.wildcard)
            {
                patterns.push(p);
            }
        }
        SearchShape { domain, patterns }
    }

    /// The cluster domain, lowercase, no trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Number of entries in the shape.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The kind of entry `index`.
    pub fn kind(&self, index: usize) -> SuffixKind {
        self.patterns[index].kind
    }

    /// The search domain of entry `index` for a pod in `namespace`, lowercase, no trailing dot.
    /// `None` for a `*` entry when the namespace is unknown.
    pub fn suffix(&self, index: usize, namespace: Option<&str>) -> Option<String> {
        let p = &self.patterns[index];
        if p.wildcard {
            namespace.map(|ns| format!("{}.{}", ns.to_ascii_lowercase(), p.tail))
        } else {
            Some(p.tail.clone())
        }
    }

    /// The concrete search list of a pod in `namespace` (lowercase, no trailing dots), as its
    /// resolv.conf would read; `*` entries are dropped when the namespace is unknown. Replay
    /// feeds this to a stub model to re-expand a base.
    pub fn search_list(&self, namespace: Option<&str>) -> Vec<String> {
        (0..self.patterns.len())
            .filter_map(|i| self.suffix(i, namespace))
            .collect()
    }

    /// Where `qname` sits in the walk of `base`: `Some(i)` when it is `base` + entry `i`,
    /// `Some(self.len())` when it is `base` itself, `None` when it is not a candidate of
    /// `base`. The tracker continues an open walk when the position grows.
    pub fn position(&self, qname: &str, base: &str) -> Option<usize> {
        let name = qname.strip_suffix('.').unwrap_or(qname);
        let base = base.strip_suffix('.').unwrap_or(base);
        if name.eq_ignore_ascii_case(base) {
            return Some(self.patterns.len());
        }
        self.decompose(name)
            .find(|d| d.base.eq_ignore_ascii_case(base))
            .map(|d| d.index)
    }

    /// Every reading of `qname` (absolute or not) as base + search suffix, longest suffix
    /// first. The base is never empty.
    pub fn decompose<'n>(&self, qname: &'n str) -> Decompositions<'_, 'n> {
        let name = qname.strip_suffix('.').unwrap_or(qname);
        Decompositions {
            shape: self,
            name,
            boundary: next_dot(name.as_bytes()),
            pattern: 0,
        }
    }

    /// The longest-suffix reading, if any: the suffix the stub most likely appended first.
    pub fn first<'n>(&self, qname: &'n str) -> Option<Decomposition<'n>> {
        self.decompose(qname).next()
    }

    /// Match entry `p` against `suffix` (the text after a label boundary).
    fn match_at<'n>(&self, p: &Pattern, suffix: &'n str) -> Option<Option<&'n str>> {
        if p.wildcard {
            // `<label>.<tail>`: compare the tail in place, then check the one label before it.
            let cut = suffix.len().checked_sub(p.tail.len() + 1)?;
            if cut == 0
                || suffix.as_bytes()[cut] != b'.'
                || !suffix[cut + 1..].eq_ignore_ascii_case(&p.tail)
            {
                return None;
            }
            let label = &suffix[..cut];
            (next_dot(label.as_bytes()).is_none() && is_rfc1123_label(label)).then_some(Some(label))
        } else {
            suffix.eq_ignore_ascii_case(&p.tail).then_some(None)
        }
    }
}

/// Iterator over the readings of a name; see [`SearchShape::decompose`].
pub struct Decompositions<'s, 'n> {
    shape: &'s SearchShape,
    name: &'n str,
    /// Byte index of the '.' before the suffix being tried.
    boundary: Option<usize>,
    pattern: usize,
}

/// The first `.` in a name: a plain loop, since names are short and `str::find`'s searcher
/// costs more to set up than the scan (this runs for every query the tracker sees).
#[inline]
fn next_dot(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'.')
}

impl<'n> Iterator for Decompositions<'_, 'n> {
    type Item = Decomposition<'n>;

    fn next(&mut self) -> Option<Decomposition<'n>> {
        while let Some(dot) = self.boundary {
            let suffix = &self.name[dot + 1..];
            while self.pattern < self.shape.patterns.len() {
                let i = self.pattern;
                self.pattern += 1;
                let p = &self.shape.patterns[i];
                // Cheap length filter before comparing bytes.
                if (p.wildcard && suffix.len() <= p.tail.len())
                    || (!p.wildcard && suffix.len() != p.tail.len())
                {
                    continue;
                }
                if let Some(namespace) = self.shape.match_at(p, suffix) {
                    return Some(Decomposition {
                        base: &self.name[..dot],
                        suffix,
                        kind: p.kind,
                        namespace,
                        index: i,
                    });
                }
            }
            self.pattern = 0;
            self.boundary = next_dot(suffix.as_bytes()).map(|i| dot + 1 + i);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> SearchShape {
        SearchShape::from_parts(
            "cluster.local",
            &["*.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            &["ec2.internal"],
        )
    }

    fn readings(q: &str) -> Vec<(String, String, &'static str, Option<String>)> {
        let s = shape();
        s.decompose(q)
            .map(|d| {
                (
                    d.base.to_string(),
                    d.suffix.to_string(),
                    d.kind.as_str(),
                    d.namespace.map(str::to_string),
                )
            })
            .collect()
    }

    #[test]
    fn ambiguous_name_gives_every_reading_longest_suffix_first() {
        let r = readings("web.prod.svc.cluster.local.");
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            (
                "web".into(),
                "prod.svc.cluster.local".into(),
                "namespace",
                Some("prod".into())
            )
        );
        assert_eq!(
            r[1],
            ("web.prod".into(), "svc.cluster.local".into(), "svc", None)
        );
        assert_eq!(
            r[2],
            (
                "web.prod.svc".into(),
                "cluster.local".into(),
                "cluster",
                None
            )
        );
    }

    #[test]
    fn external_expansions() {
        let r = readings("api.github.com.default.svc.cluster.local.");
        assert_eq!(r[0].0, "api.github.com");
        assert_eq!(r[0].3.as_deref(), Some("default"));
        let r = readings("api.github.com.ec2.internal.");
        assert_eq!(
            r,
            vec![("api.github.com".into(), "ec2.internal".into(), "node", None)]
        );
        assert!(readings("api.github.com.").is_empty());
        // A suffix alone has no base.
        assert!(readings("cluster.local.").is_empty());
        assert!(readings("ec2.internal").is_empty());
        // Not on a label boundary.
        assert!(readings("foo.xcluster.local.").is_empty());
    }

    #[test]
    fn the_namespace_label_must_be_a_namespace_name() {
        let r = readings("a.b_c.svc.cluster.local.");
        assert!(r.iter().all(|x| x.2 != "namespace"), "{r:?}");
    }

    #[test]
    fn case_insensitive_and_indices() {
        let s = shape();
        let d = s.first("Web.PROD.Svc.Cluster.Local").unwrap();
        assert_eq!(d.kind, SuffixKind::Namespace);
        assert_eq!(d.namespace, Some("PROD"));
        assert_eq!(d.index, 0);
        assert_eq!(
            s.suffix(0, Some("prod")).as_deref(),
            Some("prod.svc.cluster.local")
        );
        assert_eq!(s.suffix(0, None), None);
        assert_eq!(s.suffix(3, None).as_deref(), Some("ec2.internal"));
        assert_eq!(s.kind(3), SuffixKind::Node);
    }

    #[test]
    fn custom_domain_and_other_entries() {
        let s = SearchShape::from_parts(
            "mycorp-test",
            &[
                "*.svc.mycorp-test",
                "svc.mycorp-test",
                "mycorp-test",
                "corp.example",
            ],
            &[],
        );
        let kinds: Vec<_> = s
            .decompose("x.y.svc.mycorp-test.")
            .map(|d| d.kind)
            .collect();
        assert_eq!(
            kinds,
            [SuffixKind::Namespace, SuffixKind::Svc, SuffixKind::Cluster]
        );
        assert_eq!(s.first("x.corp.example").unwrap().kind, SuffixKind::Other);
    }

    #[test]
    fn positions_in_a_walk() {
        let s = shape();
        assert_eq!(
            s.position(
                "api.github.com.default.svc.cluster.local.",
                "api.github.com"
            ),
            Some(0)
        );
        assert_eq!(
            s.position("api.github.com.svc.cluster.local.", "api.github.com."),
            Some(1)
        );
        assert_eq!(
            s.position("api.github.com.ec2.internal.", "api.github.com"),
            Some(3)
        );
        assert_eq!(s.position("api.github.com.", "api.github.com"), Some(4));
        assert_eq!(s.position("web.github.com.", "api.github.com"), None);
        assert_eq!(
            s.position("api.github.com.default.svc.cluster.local.", "github.com"),
            None
        );
        assert_eq!(
            s.search_list(Some("prod")),
            [
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "ec2.internal"
            ]
        );
        assert_eq!(s.search_list(None).len(), 3);
    }

    #[test]
    fn duplicates_are_dropped() {
        let s = SearchShape::from_parts(
            "cluster.local",
            &["cluster.local", "cluster.local."],
            &["cluster.local"],
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn from_cluster_config() {
        let c = ClusterConfig {
            node_search: vec!["eu-west-1.compute.internal".into()],
            ..ClusterConfig::kubernetes("cluster.local")
        };
        let s = SearchShape::new(&c);
        assert_eq!(s.len(), 4);
        assert_eq!(s.domain(), "cluster.local");
        assert_eq!(
            s.first("x.eu-west-1.compute.internal.").unwrap().kind,
            SuffixKind::Node
        );
    }
}
