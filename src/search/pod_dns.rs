//! The resolv.conf kubelet writes for a pod's `dnsPolicy` and `dnsConfig`
//! (pkg/kubelet/network/dns/dns.go GetPodDNS, appendDNSConfig), so a workload's own ndots and
//! search list (custom `dnsConfig`, KEP-4427's `searches: ["."]`) can be simulated from its
//! manifest. The text then goes through [`ResolverSettings::from_resolv_conf`] like any file,
//! so each stub reads it its own way.
//!
//! [`ResolverSettings::from_resolv_conf`]: super::ResolverSettings::from_resolv_conf

use serde::Deserialize;

/// A pod manifest, or just its spec, or just `{dnsPolicy, dnsConfig}`: whichever level holds
/// them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Doc {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    spec: Option<Box<Doc>>,
    /// A Deployment's `spec.template` holds the pod's metadata and spec.
    #[serde(default)]
    template: Option<Box<Doc>>,
    #[serde(default)]
    dns_policy: Option<String>,
    #[serde(default)]
    dns_config: Option<DnsConfig>,
    #[serde(default)]
    host_network: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    namespace: Option<String>,
}

/// `PodDNSConfig`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct DnsConfig {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<DnsOption>,
}

/// `PodDNSConfigOption`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct DnsOption {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// What decides a pod's resolv.conf.
#[derive(Debug, Default, Clone)]
pub struct PodDns {
    /// `ClusterFirst` (the default), `ClusterFirstWithHostNet`, `Default` or `None`.
    pub policy: String,
    pub host_network: bool,
    pub namespace: Option<String>,
    pub config: Option<DnsConfig>,
}

impl PodDns {
    /// Read a manifest (Pod, a workload with `spec.template`, or a bare fragment).
    pub fn from_yaml(text: &str) -> anyhow::Result<PodDns> {
        let doc: Doc = yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::from_doc(&doc)
    }

    pub(crate) fn from_doc(doc: &Doc) -> anyhow::Result<PodDns> {
        let mut out = PodDns {
            policy: "ClusterFirst".into(),
            ..PodDns::default()
        };
        // Walk down metadata/spec/template, the innermost value winning.
        let mut level = Some(doc);
        while let Some(d) = level {
            if let Some(ns) = d.metadata.as_ref().and_then(|m| m.namespace.clone()) {
                out.namespace = Some(ns);
            }
            if let Some(p) = &d.dns_policy {
                out.policy = p.clone();
            }
            if let Some(c) = &d.dns_config {
                out.config = Some(c.clone());
            }
            if let Some(h) = d.host_network {
                out.host_network = h;
            }
            level = d.spec.as_deref().or(d.template.as_deref());
        }
        match out.policy.as_str() {
            "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" | "None" => Ok(out),
            p => Err(anyhow::anyhow!(
                "dnsPolicy {p:?}: expected ClusterFirst, ClusterFirstWithHostNet, Default or None"
            )),
        }
    }

    /// Whether kubelet writes the cluster's search list and its fixed `ndots:5` (before the
    /// dnsConfig options). A ClusterFirst pod on the host network falls back to Default
    /// (dns.go).
    pub fn cluster_first(&self) -> bool {
        match self.policy.as_str() {
            "ClusterFirst" => !self.host_network,
            "ClusterFirstWithHostNet" => true,
            _ => false,
        }
    }

    /// Whether the pod's ndots is its own rather than kubelet's cluster-wide `ndots:5`: its
    /// dnsConfig sets one, or its policy does not write the cluster's options at all.
    pub fn own_ndots(&self) -> bool {
        !self.cluster_first()
            || self
                .config
                .as_ref()
                .is_some_and(|c| c.options.iter().any(|o| o.name == "ndots"))
    }

    /// The resolv.conf kubelet writes: `namespace` (when the manifest has none) and
    /// `cluster_domain` for the cluster search list, `node` for the node's own file
    /// (`dnsPolicy: Default`, and the node's search domains after the cluster's).
    pub fn resolv_conf(&self, namespace: &str, cluster_domain: &str, node: &str) -> String {
        let ns = self.namespace.as_deref().unwrap_or(namespace);
        let node_search: Vec<String> = node
            .lines()
            .filter_map(|l| {
                l.strip_prefix("search")
                    .or_else(|| l.strip_prefix("domain"))
            })
            .next_back()
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let node_options: Vec<String> = node
            .lines()
            .filter_map(|l| l.strip_prefix("options"))
            .flat_map(|rest| rest.split_whitespace().map(str::to_string))
            .collect();
        let cluster_first = self.cluster_first();
        let (mut searches, mut options): (Vec<String>, Vec<String>) = if cluster_first {
            let d = cluster_domain.trim_end_matches('.');
            let mut s = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
            s.extend(node_search);
            (s, vec!["ndots:5".into()])
        } else if self.policy == "None" {
            (Vec::new(), Vec::new())
        } else {
            (node_search, node_options)
        };
        if let Some(c) = &self.config {
            // appendDNSConfig: searches appended without duplicates; options merged by name,
            // the pod's value winning.
            for s in &c.searches {
                if !searches.contains(s) {
                    searches.push(s.clone());
                }
            }
            for o in &c.options {
                let word = match &o.value {
                    Some(v) => format!("{}:{v}", o.name),
                    None => o.name.clone(),
                };
                match options
                    .iter_mut()
                    .find(|w| w.split(':').next() == Some(o.name.as_str()))
                {
                    Some(w) => *w = word,
                    None => options.push(word),
                }
            }
        }
        let mut text = String::new();
        if !searches.is_empty() {
            text.push_str(&format!("search {}\n", searches.join(" ")));
        }
        if !options.is_empty() {
            text.push_str(&format!("options {}\n", options.join(" ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_first_with_dns_config_appends_searches_and_overrides_options() {
        let pod = PodDns::from_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  dnsConfig:\n    searches: [\".\"]\n    options: [{name: ndots, value: \"2\"}, {name: single-request}]\n",
        )
        .unwrap();
        assert_eq!(
            pod.resolv_conf("default", "cluster.local", "search corp.example\n"),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example .\noptions ndots:2 single-request\n"
        );
    }

    #[test]
    fn policy_none_and_default_and_workload_templates() {
        let pod = PodDns::from_yaml(
            "kind: Deployment\nspec:\n  template:\n    spec:\n      dnsPolicy: None\n      dnsConfig: {searches: [\".\"]}\n",
        )
        .unwrap();
        assert_eq!(
            pod.resolv_conf("default", "cluster.local", ""),
            "search .\n"
        );
        let pod = PodDns::from_yaml("dnsPolicy: Default\n").unwrap();
        assert_eq!(
            pod.resolv_conf("x", "cluster.local", "search a.example\noptions ndots:1\n"),
            "search a.example\noptions ndots:1\n"
        );
        let host = PodDns::from_yaml("spec: {hostNetwork: true}\n").unwrap();
        assert_eq!(host.resolv_conf("x", "cluster.local", ""), "");
        assert!(PodDns::from_yaml("dnsPolicy: Bogus\n").is_err());
        assert!(PodDns::from_yaml("[1, 2").is_err());
    }
}
