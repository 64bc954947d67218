//! Per-workload pod DNS config: `--pod-dns-config FILE` of `ndots replay` and `ndots analyze`,
//! and `ndots simulate --pod-dns-config FILE --workload NAME`, so each client's lookups are
//! replayed and advised with the resolv.conf its own pod spec gives it (custom dnsConfig ndots,
//! searches, options; dnsPolicy) instead of the cluster-wide one (docs/pod-dns-config.md).
//!
//! Captures name clients by address, never by pod, so a workload is matched by the client
//! addresses it runs on (`clients`: addresses or CIDRs, e.g. its pods' IPs or a node's pod
//! CIDR); the first workload listing a client wins. Clients no workload lists keep the
//! cluster-wide setting. Each entry is a pod manifest fragment (the keys `ndots simulate
//! --pod-dns-config` reads: `dnsPolicy`, `dnsConfig`, `hostNetwork`, or a whole Pod or
//! workload with `spec.template`) plus `name`, `clients`, and optionally `namespace` and `stub`.

use std::net::IpAddr;

use anyhow::{anyhow, Context};
use serde::Deserialize;

use super::pod_dns::{Doc, PodDns};
use super::{Environment, ResolverSettings, Stub};
use crate::config::{ClusterConfig, Network};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    workloads: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    #[serde(default)]
    clients: Vec<Network>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    stub: Option<String>,
    #[serde(flatten)]
    pod: Doc,
}

/// One workload: which clients it is, and the pod DNS config they run with.
#[derive(Debug, Clone)]
pub struct Workload {
    /// `namespace/name` as the operator writes it: the label in the output.
    pub name: String,
    pub clients: Vec<Network>,
    /// The image's stub resolver when known; else the run's (`--captured-stub`, the report's).
    pub stub: Option<Stub>,
    pub pod: PodDns,
}

impl Workload {
    /// The resolv.conf kubelet writes for it: `namespace` when the entry has none, the
    /// cluster's domain, and the node's search domains (`cluster.node_search`) after the
    /// cluster's for ClusterFirst (node options are unknown here).
    pub fn resolv_conf(&self, namespace: Option<&str>, cluster: &ClusterConfig) -> String {
        let node = if cluster.node_search.is_empty() {
            String::new()
        } else {
            format!("search {}\n", cluster.node_search.join(" "))
        };
        self.pod
            .resolv_conf(namespace.unwrap_or("default"), &cluster.domain, &node)
    }

    /// The resolver settings `stub` reads from that resolv.conf; `ndots` replaces kubelet's
    /// `ndots:5` unless the pod's ndots is its own ([`PodDns::own_ndots`]).
    pub fn settings(
        &self,
        stub: Stub,
        namespace: Option<&str>,
        cluster: &ClusterConfig,
        ndots: Option<u32>,
    ) -> ResolverSettings {
        let text = self.resolv_conf(namespace, cluster);
        let mut s = ResolverSettings::from_resolv_conf(&text, stub, &Environment::default());
        if let (Some(n), false) = (ndots, self.pod.own_ndots()) {
            s.set_ndots(n, stub);
        }
        s
    }

    /// The stub that runs in it: its own, else `default`.
    pub fn stub_or(&self, default: Stub) -> Stub {
        self.stub.unwrap_or(default)
    }
}

/// The workloads of a `--pod-dns-config` file, in file order.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    pub list: Vec<Workload>,
}

impl Workloads {
    pub fn from_yaml(text: &str) -> anyhow::Result<Workloads> {
        let file: File = yaml_serde::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let mut list = Vec::with_capacity(file.workloads.len());
        for e in file.workloads {
            let mut pod =
                PodDns::from_doc(&e.pod).with_context(|| format!("workload {:?}", e.name))?;
            if e.namespace.is_some() {
                pod.namespace = e.namespace;
            }
            let stub = e
                .stub
                .map(|s| {
                    s.parse::<Stub>()
                        .map_err(|m| anyhow!("workload {:?}: {m}", e.name))
                })
                .transpose()?;
            if e.name.is_empty() {
                return Err(anyhow!("a workload without a name"));
            }
            if list.iter().any(|w: &Workload| w.name == e.name) {
                return Err(anyhow!("workload {:?} is listed twice", e.name));
            }
            list.push(Workload {
                name: e.name,
                clients: e.clients,
                stub,
                pod,
            });
        }
        Ok(Workloads { list })
    }

    pub fn read(path: &std::path::Path) -> anyhow::Result<Workloads> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Whether `text` is a workloads file (a top-level `workloads:` list) rather than one
    /// pod manifest.
    pub fn is_workloads_file(text: &str) -> bool {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            workloads: Option<yaml_serde::Value>,
        }
        yaml_serde::from_str::<Probe>(text).is_ok_and(|p| p.workloads.is_some())
    }

    /// The index of the first workload that lists `client`.
    pub fn find(&self, client: IpAddr) -> Option<usize> {
        self.list
            .iter()
            .position(|w| w.clients.iter().any(|n| n.contains(client)))
    }

    pub fn by_name(&self, name: &str) -> Option<&Workload> {
        self.list.iter().find(|w| w.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
workloads:
  - name: shop/web
    clients: [10.244.1.0/24]
    namespace: shop
    dnsConfig:
      options: [{name: ndots, value: "2"}]
  - name: batch/job
    clients: ["10.244.2.7", "fd00::7"]
    stub: musl
    dnsPolicy: None
    dnsConfig: {searches: ["."]}
  - name: tools/debug
    clients: [10.244.3.0/24]
    spec: {template: {metadata: {namespace: tools}, spec: {dnsConfig: {searches: [corp.example]}}}}
"#;

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            domain: "cluster.local".into(),
            search: vec![],
            node_search: vec![],
        }
    }

    #[test]
    fn clients_pick_their_workload_and_pinned_ndots_survive_a_cluster_wide_setting() {
        let w = Workloads::from_yaml(FILE).unwrap();
        assert_eq!(w.find("10.244.1.9".parse().unwrap()), Some(0));
        assert_eq!(w.find("10.244.2.7".parse().unwrap()), Some(1));
        assert_eq!(w.find("fd00::7".parse().unwrap()), Some(1));
        assert_eq!(w.find("10.244.2.8".parse().unwrap()), None);
        let web = &w.list[0];
        assert!(web.pod.own_ndots());
        let s = web.settings(Stub::Glibc, None, &cluster(), Some(1));
        assert_eq!(s.ndots, 2, "the pod's dnsConfig wins over the setting");
        assert_eq!(s.search[0], "shop.svc.cluster.local");
        let job = &w.list[1];
        assert_eq!(job.stub, Some(Stub::Musl));
        assert!(
            job.pod.own_ndots(),
            "dnsPolicy None writes no cluster ndots"
        );
        // Without ndots in its file the stub's default (1) applies.
        assert_eq!(job.settings(Stub::Musl, None, &cluster(), Some(5)).ndots, 1);
        let debug = &w.list[2];
        assert!(!debug.pod.own_ndots());
        let s = debug.settings(Stub::Glibc, Some("x"), &cluster(), Some(3));
        assert_eq!(s.ndots, 3);
        assert_eq!(s.search[0], "tools.svc.cluster.local");
        assert_eq!(s.search.last().unwrap(), "corp.example");
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        for bad in [
            "workloads: [{name: a, clients: [10.0.0.0/33]}]",
            "workloads: [{name: a, stub: bind}]",
            "workloads: [{name: a, dnsPolicy: Bogus}]",
            "workloads: [{name: a}, {name: a}]",
            "workloads: [{clients: []}]",
            "other: 1",
            "[1, 2",
        ] {
            assert!(Workloads::from_yaml(bad).is_err(), "{bad}");
        }
        assert!(Workloads::is_workloads_file(FILE));
        assert!(!Workloads::is_workloads_file("dnsPolicy: None\n"));
    }
}
