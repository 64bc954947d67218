//! The Kubernetes DNS schema: which names can exist under the cluster domain
//! (kubernetes/dns docs/specification.md, "Kubernetes DNS-Based Service Discovery", v1.1.0).
//!
//! A name the schema allows may exist (or be an empty non-terminal that answers NODATA), so it
//! must always be forwarded; a name it does not allow cannot exist, and a query for it under a
//! search suffix is an expansion nobody meant (DESIGN §3). When in doubt we allow: a false
//! "allowed" costs one forwarded query, a false "impossible" breaks a lookup.
//!
//! Label syntax: Service, namespace and hostname labels are RFC 1123 labels (Kubernetes
//! `IsDNS1123Label`; Services are RFC 1035 labels, a subset, or RFC 1123 with
//! RelaxedServiceNameValidation), so RFC 1123 is the permissive test for all three.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::name::{in_zone, is_rfc1123_label};

/// What a name under the cluster domain is, per the specification section that defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaName {
    /// `<zone>` itself (SOA, NS).
    Apex,
    /// `dns-version.<zone>` TXT (§2.2).
    DnsVersion,
    /// `svc.<zone>`: empty non-terminal, NODATA.
    SvcNode,
    /// `<ns>.svc.<zone>`: empty non-terminal, NODATA when the namespace has services.
    Namespace,
    /// `<service>.<ns>.svc.<zone>`: A/AAAA, CNAME for ExternalName (§2.3.1, §2.4.1, §2.5.1).
    Service,
    /// `<hostname>.<service>.<ns>.svc.<zone>`: headless endpoint (§2.4.1), hostname or dashed IP.
    Endpoint,
    /// `_<proto>.<service>.<ns>.svc.<zone>`: empty non-terminal of the SRV names.
    SrvProto,
    /// `_<port>._<proto>.<service>.<ns>.svc.<zone>`: SRV (§2.3.2, §2.4.2).
    Srv,
    /// `pod.<zone>` and `<ns>.pod.<zone>`: empty non-terminals.
    PodNode,
    /// `<a-b-c-d>.<ns>.pod.<zone>`: pod A/AAAA records (dashed IPv4 or IPv6).
    Pod,
    /// `dns.<zone>` and `ns.dns.<zone>`: not in the specification, but CoreDNS's kubernetes
    /// plugin serves `ns.dns.<zone>` (the MNAME of the zone's SOA, with the DNS Service's
    /// address) and `dns.<zone>` as its empty non-terminal.
    NameServer,
}

/// Classify `name` (absolute or not, any case) under cluster domain `domain` (no trailing dot).
/// `None`: not under the domain, or it cannot exist there.
pub fn classify(name: &str, domain: &str) -> Option<SchemaName> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !in_zone(name, domain) {
        return None;
    }
    if name.len() == domain.len() {
        return Some(SchemaName::Apex);
    }
    let rel = &name[..name.len() - domain.len() - 1];
    // Walk labels from the right, without allocating: at most five are meaningful.
    let mut labels = rel.rsplit('.');
    let top = labels.next()?;
    let l: [Option<&str>; 5] = [
        labels.next(),
        labels.next(),
        labels.next(),
        labels.next(),
        labels.next(),
    ];
    let too_deep = |n: usize| l[n..].iter().any(Option::is_some);
    if top.eq_ignore_ascii_case("dns-version") {
        return (l[0].is_none()).then_some(SchemaName::DnsVersion);
    }
    if top.eq_ignore_ascii_case("dns") {
        return match l[0] {
            None => Some(SchemaName::NameServer),
            Some(ns) if ns.eq_ignore_ascii_case("ns") && !too_deep(1) => {
                Some(SchemaName::NameServer)
            }
            Some(_) => None,
        };
    }
    if top.eq_ignore_ascii_case("svc") {
        let Some(ns) = l[0] else {
            return Some(SchemaName::SvcNode);
        };
        if !is_rfc1123_label(ns) {
            return None;
        }
        let Some(svc) = l[1] else {
            return Some(SchemaName::Namespace);
        };
        if !is_rfc1123_label(svc) {
            return None;
        }
        let Some(third) = l[2] else {
            return Some(SchemaName::Service);
        };
        if is_proto_label(third) {
            return match l[3] {
                None => Some(SchemaName::SrvProto),
                Some(port) if is_port_label(port) && !too_deep(4) => Some(SchemaName::Srv),
                Some(_) => None,
            };
        }
        if is_rfc1123_label(third) && !too_deep(3) {
            return Some(SchemaName::Endpoint);
        }
        return None;
    }
    if top.eq_ignore_ascii_case("pod") {
        let Some(ns) = l[0] else {
            return Some(SchemaName::PodNode);
        };
        if !is_rfc1123_label(ns) {
            return None;
        }
        let Some(ip) = l[1] else {
            return Some(SchemaName::PodNode);
        };
        return (is_dashed_ip(ip) && !too_deep(2)).then_some(SchemaName::Pod);
    }
    None
}

/// Can `name` exist under `domain` per the schema? Names outside the domain are not the
/// schema's business and are reported as allowed.
pub fn allows(name: &str, domain: &str) -> bool {
    let bare = name.strip_suffix('.').unwrap_or(name);
    !in_zone(bare, domain) || classify(bare, domain).is_some()
}

/// `_tcp`, `_udp`, `_sctp` (the protocols a Service port can have).
fn is_proto_label(l: &str) -> bool {
    ["_tcp", "_udp", "_sctp"]
        .iter()
        .any(|p| l.eq_ignore_ascii_case(p))
}

/// `_<port name>`: an IANA service name (RFC 6335 §5.1, at most 15 characters) as Kubernetes
/// validates port names; we accept any RFC 1123-shaped label after the underscore.
fn is_port_label(l: &str) -> bool {
    l.strip_prefix('_')
        .is_some_and(|p| p.len() <= 63 && is_rfc1123_label(p))
}

/// `10-0-0-5` (IPv4) or `2001-db8--5` (IPv6 with ':' written '-'), as the spec's pod and
/// endpoint records spell addresses.
fn is_dashed_ip(l: &str) -> bool {
    if l.len() > 39 {
        return false;
    }
    let v4 = l.replace('-', ".");
    if v4.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    l.replace('-', ":").parse::<Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "cluster.local";

    #[test]
    fn names_the_spec_defines() {
        let cases = [
            ("cluster.local.", SchemaName::Apex),
            ("dns-version.cluster.local.", SchemaName::DnsVersion),
            ("svc.cluster.local.", SchemaName::SvcNode),
            ("prod.svc.cluster.local.", SchemaName::Namespace),
            ("web.prod.svc.cluster.local.", SchemaName::Service),
            ("web-0.web.prod.svc.cluster.local.", SchemaName::Endpoint),
            ("10-0-0-5.web.prod.svc.cluster.local.", SchemaName::Endpoint),
            ("_tcp.web.prod.svc.cluster.local.", SchemaName::SrvProto),
            ("_http._tcp.web.prod.svc.cluster.local.", SchemaName::Srv),
            (
                "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
                SchemaName::Srv,
            ),
            ("pod.cluster.local.", SchemaName::PodNode),
            ("prod.pod.cluster.local.", SchemaName::PodNode),
            ("10-0-0-5.prod.pod.cluster.local.", SchemaName::Pod),
            ("fd00-10-244--5.prod.pod.cluster.local.", SchemaName::Pod),
            ("WEB.Prod.SVC.cluster.local", SchemaName::Service),
            // Not in the spec, served by CoreDNS: the SOA's MNAME (the schema shortcut answered
            // NXDOMAIN for it).
            ("ns.dns.cluster.local.", SchemaName::NameServer),
            ("dns.cluster.local.", SchemaName::NameServer),
        ];
        for (n, want) in cases {
            assert_eq!(classify(n, D), Some(want), "{n}");
            assert!(allows(n, D));
        }
    }

    #[test]
    fn names_that_cannot_exist() {
        for n in [
            "api.github.com.default.svc.cluster.local.",
            "api.github.com.cluster.local.",
            "web.cluster.local.",
            "web.prod.cluster.local.",
            "a.b.c.d.svc.cluster.local.",
            "x._http._tcp.web.prod.svc.cluster.local.",
            "_http._tcp.web.prod.svc.cluster.local.evil",
            "web.prod.pod.cluster.local.",
            "1-2-3-4.x.prod.pod.cluster.local.",
            "web.pr_od.svc.cluster.local.",
            "_http.web.prod.svc.cluster.local.",
            "x.dns-version.cluster.local.",
            "x.ns.dns.cluster.local.",
            "web.dns.cluster.local.",
        ] {
            let bare = n.trim_end_matches('.');
            if in_zone(bare, D) {
                assert_eq!(classify(n, D), None, "{n}");
                assert!(!allows(n, D), "{n}");
            } else {
                assert!(allows(n, D), "outside the domain: {n}");
            }
        }
    }

    #[test]
    fn external_looking_names_can_be_in_cluster() {
        // Namespaces named com, io, dev exist in real clusters.
        assert_eq!(
            classify("web.com.svc.cluster.local.", D),
            Some(SchemaName::Service)
        );
        assert_eq!(
            classify("github.io.svc.cluster.local.", D),
            Some(SchemaName::Service)
        );
        assert_eq!(
            classify("api.github.com.svc.cluster.local.", D),
            Some(SchemaName::Endpoint)
        );
        assert_eq!(
            classify("app.dev.svc.cluster.local.", D),
            Some(SchemaName::Service)
        );
    }

    #[test]
    fn outside_the_domain_is_not_classified() {
        assert_eq!(classify("api.github.com.", D), None);
        assert!(allows("api.github.com.", D));
        assert_eq!(classify("xcluster.local.", D), None);
    }

    #[test]
    fn dashed_ips() {
        assert!(is_dashed_ip("10-0-0-5"));
        assert!(is_dashed_ip("2001-db8--1"));
        assert!(!is_dashed_ip("web"));
        assert!(!is_dashed_ip("10-0-0"));
        assert!(!is_dashed_ip("300-0-0-1"));
    }
}
