//! The proxy's configuration (DESIGN §3): the YAML file, the embedded default, and validation.
//!
//! Parsing happens in two steps. `FileConfig` mirrors the YAML exactly and rejects unknown keys
//! with the line they are on; `Config::from_file_config` resolves it into checked values
//! (socket addresses, durations, upstream server lists read from resolv.conf files). Nothing is
//! applied until the whole file has been validated, so a bad reload leaves the old one serving.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// The configuration the proxy runs with when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../configs/default.yaml");

/// The YAML file as written. Every key is optional; `deny_unknown_fields` turns a typo into an
/// error that names the key and its line.
///
/// The doc comment of each field is its entry in docs/reference/config.md (`ndots docs`
/// generates it through `schemars`; `tests/docs.rs` fails when the page is out of date).
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Addresses to serve DNS on, UDP and TCP each (`IP:PORT`, `[v6]:PORT`). Default
    /// `["127.0.0.1:1053"]`; node-local: `["169.254.20.10:53"]`. Needs a restart to change.
    pub listen: Option<Vec<Addr>>,
    /// Admin HTTP listener: `/metrics`, `/report`, `/healthz`, `/readyz`. Default
    /// `127.0.0.1:9255`. Needs a restart to change.
    pub admin: Option<Addr>,
    /// Who may read `/report` (client addresses and the names they look up): `local`
    /// (default: loopback clients only; others get 403), `public` (anyone who reaches the admin
    /// port), `off` (404 for everyone). `/metrics`, `/healthz` and `/readyz` are not affected.
    pub admin_report: Option<AdminReport>,
    /// The shape of the pods' search list, used to recognise expansions.
    pub cluster: Option<ClusterSection>,
    /// Where queries go, by zone, longest suffix first. Default: zone `.` to the nameservers of
    /// the host's `/etc/resolv.conf`.
    pub upstreams: Option<Vec<UpstreamSection>>,
    /// The response cache (RFC 2308 negative caching, RFC 8767 serve-stale).
    pub cache: Option<CacheSection>,
    /// Short-circuiting of search-path expansions (docs/shortcut.md).
    pub shortcut: Option<ShortcutSection>,
    /// The amplification tracker behind `/report` and the `ndots_lookup_*` metrics. Needs a
    /// restart to change.
    pub tracker: Option<TrackerSection>,
    /// Serving knobs: threads, limits, shutdown.
    pub server: Option<ServerSection>,
    /// Client networks served (`CIDR`); queries from anywhere else get REFUSED and are counted
    /// in `ndots_refused_queries_total` (not an open resolver). Default: loopback, link-local
    /// and the private ranges (`127.0.0.0/8`, `10.0.0.0/8`, `172.16.0.0/12`,
    /// `192.168.0.0/16`, `100.64.0.0/10`, `169.254.0.0/16`, `::1/128`, `fc00::/7`,
    /// `fe80::/10`).
    pub allow: Option<Vec<Network>>,
    /// The node-local address (deploy/README.md): a link with fixed addresses the proxy
    /// creates itself and never removes, as NodeLocal DNSCache does. Default: off.
    pub node_local: Option<NodeLocalSection>,
    /// What `/metrics` exports besides the `ndots_` series (docs/reference/metrics.md).
    pub metrics: Option<MetricsSection>,
    /// The proxy's log on stderr and its query log on stdout.
    pub log: Option<LogSection>,
    /// The proxy's own traffic as dnstap (Frame Streams), for DNS-collector, Loki or
    /// `ndots collect`. Default: off. Needs a restart to change.
    pub dnstap: Option<DnstapSection>,
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Also export CoreDNS's metric names and labels for the same figures
    /// (`coredns_dns_requests_total`, `coredns_cache_hits_total`, `coredns_forward_*`, ...), so
    /// NodeLocal DNSCache dashboards and the coredns-mixin alerts work unchanged. Default
    /// `false`.
    pub coredns_names: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (one line per event, colours only when stderr is a terminal) or `json` (one JSON
    /// object per line: `timestamp`, `level`, `target`, `message` and the event's fields).
    /// `--log-format` overrides it; `NDOTS_LOG` sets the level (`info` by default, e.g.
    /// `NDOTS_LOG=debug` or `NDOTS_LOG=ndots=debug,warn`). Default `text`.
    pub format: Option<LogFormat>,
    /// Write one line per answered query to stdout in CoreDNS's `log` plugin format (with an
    /// RFC 3339 timestamp first), which `ndots analyze` and CoreDNS log tools read. Default
    /// `false`.
    pub queries: Option<bool>,
}

/// How the proxy writes its log.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, clap::ValueEnum, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (Loki, Elasticsearch).
    Json,
}

/// The validated `log` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogConfig {
    pub format: LogFormat,
    pub queries: bool,
}

/// `dnstap`: where the proxy writes its traffic as dnstap, and which messages.
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnstapSection {
    /// `unix:PATH` or `tcp:HOST:PORT` (bidirectional Frame Streams, reconnecting every second),
    /// or `file:PATH` (truncated at start). Messages that cannot be written at once are dropped
    /// and counted in `ndots_dnstap_messages_total{result="dropped"}`: answers never wait.
    pub output: String,
    /// `client` (CLIENT_QUERY/CLIENT_RESPONSE: the pods' queries and the answers they got)
    /// and/or `forwarder` (FORWARDER_QUERY/FORWARDER_RESPONSE: the proxy's queries to its
    /// upstreams). Default `[client]`.
    pub messages: Option<Vec<DnstapMessage>>,
}

/// A kind of dnstap message the proxy writes.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnstapMessage {
    Client,
    Forwarder,
}

/// The node-local address: a link the proxy creates and addresses it puts there, as NodeLocal
/// DNSCache does, so pods reach the proxy on a fixed address (issue 7).
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeLocalSection {
    /// Create the link and addresses, and listen on them. Default false.
    pub enabled: Option<bool>,
    /// The link's name, at most 15 characters. Default `nodelocaldns` (NodeLocal DNSCache's).
    pub interface: Option<String>,
    /// `dummy` (default, as NodeLocal DNSCache) or `bridge` (a bridge without ports, for
    /// kernels built without the dummy driver).
    pub kind: Option<LinkKind>,
    /// Addresses put on the link and listened on. Default `["169.254.20.10"]`; add the
    /// kube-dns ClusterIP to answer pods that still use it (then the upstream must be another
    /// Service IP).
    pub addresses: Option<Vec<Ip>>,
    /// The DNS port on those addresses. Default 53.
    pub port: Option<u16>,
    /// Load the nftables table `inet ndots` (raw hook): DNS to and from the addresses bypasses
    /// conntrack. Replaced atomically at each start, never removed. Default false.
    pub notrack: Option<bool>,
    /// ACCEPT rules for the DNS port (and the admin port, when the admin listener covers the
    /// addresses) to and from the addresses, at the head of the host's filter `INPUT` and
    /// `OUTPUT` chains: iptables-legacy's and iptables-nft's, IPv4 and IPv6, whichever exist.
    /// Needed on nodes whose INPUT policy is DROP. Checked every 2 s and put back; removed only
    /// by `ndots node-local teardown`. Default true.
    pub firewall: Option<bool>,
}

/// Who may read `/report` on the admin listener (DESIGN §9 "Admin").
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminReport {
    /// Loopback clients only (`kubectl port-forward`, `ndots report` on the node); 403 for the
    /// rest.
    #[default]
    Local,
    /// Every client that reaches the admin port.
    Public,
    /// Nobody: 404.
    Off,
}

/// The link type created for the node-local addresses.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// What NodeLocal DNSCache creates (needs the kernel's `dummy` driver, CONFIG_DUMMY).
    #[default]
    Dummy,
    /// A bridge without ports: holds local addresses just as well, on kernels without `dummy`.
    Bridge,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Dummy => "dummy",
            LinkKind::Bridge => "bridge",
        }
    }
}

/// An IP address, checked while parsing so the error carries the YAML line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ip(pub IpAddr);

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim().parse::<IpAddr>().map(Ip).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid IP address {s:?}: expected e.g. 169.254.20.10 or fd00::10"
            ))
        })
    }
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster DNS domain (kubelet `--cluster-domain`). Default `cluster.local`.
    pub domain: Option<String>,
    /// The pod search list as kubelet writes it; `*` stands for the pod's namespace. Default
    /// `["*.svc.<domain>", "svc.<domain>", "<domain>"]`.
    pub search: Option<Vec<String>>,
    /// The node's own search domains, which kubelet appends to every pod's list (e.g.
    /// `ec2.internal`). Default `[]`, or the platform's from `profile`.
    pub node_search: Option<Vec<String>>,
    /// The platform the nodes run on: `aws`, `gcp`, `azure` or `kind` (deploy/README.md, "Per
    /// cloud"). Sets `node_search` to the platform's node domains found in the search line of
    /// `/etc/resolv.conf` (the node's, under `dnsPolicy: Default`) unless `node_search` is
    /// given, and adds the platform's zones to `shortcut.zones`. Default: none.
    pub profile: Option<Profile>,
}

/// A cloud preset for `cluster.profile` (sources in deploy/README.md, "Per cloud").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// EKS / EC2: node domains `ec2.internal` (us-east-1) and `<region>.compute.internal`.
    Aws,
    /// GKE / Compute Engine: node domains under `.internal` (`<zone>.c.<project>.internal`,
    /// `c.<project>.internal`, `google.internal`).
    Gcp,
    /// AKS / Azure VMs: `<id>.<x>.internal.cloudapp.net` and `reddog.microsoft.com`.
    Azure,
    /// kind: no node domain (the host's search domains are not the cluster's platform).
    Kind,
}

impl Profile {
    /// Suffixes of the platform's node domains: a search domain of the node's resolv.conf
    /// equal to or under one of these is a node domain.
    fn node_domains(self) -> &'static [&'static str] {
        match self {
            Profile::Aws => &["ec2.internal", "compute.internal"],
            Profile::Gcp => &["internal"],
            Profile::Azure => &["internal.cloudapp.net", "reddog.microsoft.com"],
            Profile::Kind => &[],
        }
    }

    /// Zones nobody means relative to a search domain on that platform: the node domains
    /// themselves (a node's name expanded under the cluster domain) and the platform's API
    /// domains that pods call all day (STS, ECR, S3; Google APIs and registries; Azure
    /// management, storage and registries).
    pub fn zones(self) -> &'static [&'static str] {
        match self {
            Profile::Aws => &["ec2.internal", "compute.internal", "amazonaws.com"],
            Profile::Gcp => &["internal", "googleapis.com", "gcr.io", "pkg.dev"],
            Profile::Azure => &[
                "internal.cloudapp.net",
                "reddog.microsoft.com",
                "azure.com",
                "windows.net",
                "azurecr.io",
            ],
            Profile::Kind => &[],
        }
    }

    /// The node's search domains (from its resolv.conf) that are this platform's node domains.
    pub fn node_search(self, resolv_search: &[String]) -> Vec<String> {
        resolv_search
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| {
                self.node_domains()
                    .iter()
                    .any(|s| d == s || d.ends_with(&format!(".{s}")))
            })
            .collect()
    }
}

/// The search domains of a resolv.conf as glibc reads them: the last `search` or `domain`
/// line wins.
pub fn search_from_resolv_conf(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("search") | Some("domain") => out = w.map(str::to_string).collect(),
            _ => {}
        }
    }
    out
}

#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// The zone this entry serves (`cluster.local`, a stub domain, or `.` for the rest).
    /// Required.
    pub zone: String,
    /// `IP`, `IP:PORT` (port 53 when absent), or a path to a resolv.conf whose nameservers are
    /// used. Several servers mean failover. Required.
    pub servers: Vec<String>,
    /// `udp` (default; truncated answers are retried over TCP) or `tcp` (always TCP, like
    /// NodeLocal DNSCache's `force_tcp`).
    #[serde(default)]
    pub protocol: Protocol,
    /// Time to wait for one server before trying the next. Default `2s`. Over UDP a query
    /// unanswered for the server's usual round trip (at least 200 ms, at most half this) is
    /// also sent to it again, from another socket, while it keeps waiting. The next server is
    /// asked only when one fails: servers listed are for failover, not raced.
    pub timeout: Option<HumanDuration>,
    /// The servers answer alike (replicas of one resolver, or resolvers with the same view):
    /// over UDP, a query unanswered for a server's usual round trip is sent to the next
    /// server instead of the same one, and a server whose attempt another server overtook
    /// counts that as a failure. A dead first server then costs a query its round trip, not
    /// the timeout. Default `false`: with an internal resolver listed before a public one,
    /// the public one's NXDOMAIN would answer names only the first knows. UDP zones only.
    #[serde(default)]
    pub equivalent: bool,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP, retried over TCP when the answer is truncated (RFC 7766 §5).
    #[default]
    Udp,
    /// Always TCP (NodeLocal DNSCache's `force_tcp`).
    Tcp,
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Entries kept; beyond this the least recently used are evicted. Default `100000`.
    pub capacity: Option<usize>,
    /// Seconds; TTLs below are raised to this. Default `0`.
    pub min_ttl: Option<u32>,
    /// Seconds; TTLs above are capped. Default `3600`.
    pub max_ttl: Option<u32>,
    /// Seconds; cap for NXDOMAIN and NODATA, whose TTL comes from the SOA (RFC 2308 §5).
    /// Default `30`.
    pub negative_max_ttl: Option<u32>,
    /// Seconds past expiry an answer may still be served when every upstream fails (RFC 8767);
    /// `0` turns it off. Default `3600`.
    pub serve_stale: Option<u32>,
    /// Refresh popular entries shortly before they expire. Default `true`.
    pub prefetch: Option<bool>,
    /// The client response timer (RFC 8767 §5): a client whose query has waited this long on
    /// the upstreams gets the stale answer, if the cache has one, while the upstream query
    /// goes on and refreshes the cache. `0s` turns the timer off (stale only on failure).
    /// Default `1.8s`.
    pub stale_after: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShortcutSection {
    /// `nxdomain` (default), `autopath`, `shadow` or `off`; see docs/shortcut.md before
    /// choosing.
    pub mode: Option<ShortcutMode>,
    /// Zones whose names nobody means under a search suffix (`github.com`, `amazonaws.com`):
    /// `api.github.com.default.svc.cluster.local` is answered locally. Default `[]`.
    pub zones: Option<Vec<String>>,
    /// Answer locally the expansions under the cluster domain that the Kubernetes DNS schema
    /// cannot produce. Default `true`. Names CoreDNS serves beyond the Kubernetes DNS
    /// specification (its `hosts`, `template`, `file` or `rewrite` records under the cluster
    /// domain) go in `exempt`.
    pub kubernetes_schema: Option<bool>,
    /// Names or zones the shortcut never answers for, e.g. operators' own records under the
    /// cluster domain (`registry.cluster.local`, `db.corp.cluster.local`): a query for one of
    /// them, or for a name under one, is always forwarded. `ns.dns.<cluster domain>` (the
    /// name server in the zone's SOA) is always exempt. Default `[]`.
    pub exempt: Option<Vec<String>>,
}

/// What the proxy does with a search-path expansion nobody meant (DESIGN §3).
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, clap::ValueEnum, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShortcutMode {
    /// Answer NXDOMAIN locally, with a synthesized SOA.
    #[default]
    Nxdomain,
    /// Answer the first expansion with a CNAME to the candidate that exists.
    Autopath,
    /// Forward as usual; count where the shortcut would have disagreed with upstream.
    Shadow,
    /// Forward every query.
    Off,
}

impl ShortcutMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShortcutMode::Nxdomain => "nxdomain",
            ShortcutMode::Autopath => "autopath",
            ShortcutMode::Shadow => "shadow",
            ShortcutMode::Off => "off",
        }
    }
}

#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrackerSection {
    /// A walk with no new query for this long ends. Default `2s`.
    pub idle: Option<HumanDuration>,
    /// Walks tracked at once; the least recent is evicted beyond this (counted in
    /// `ndots_tracker_evictions_total`). Default `200000`.
    pub max_open_walks: Option<usize>,
    /// Namespaces with their own `ndots_namespace_*_total{namespace}` series: the first this
    /// many seen keep theirs, later ones count as `namespace="other"`, so a cluster with
    /// thousands of namespaces cannot blow up the series count. Default `50`.
    pub namespace_series: Option<usize>,
}

/// Knobs of the serving side that DESIGN §3 leaves open.
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// UDP worker threads, one SO_REUSEPORT socket each. Default: half the cores, at least 1.
    /// Needs a restart to change.
    pub workers: Option<usize>,
    /// Queries waiting on upstreams at once (joined to another's upstream query, and
    /// prefetches, included); beyond this new misses get a stale answer or SERVFAIL (counted
    /// in `ndots_overload_drops_total{limit="max_inflight"}`). Default `10000`. The waiting
    /// share of `server.memory_limit` bounds them too, and usually first: a fifth of the
    /// limit, charged 10.5 KiB plus the query's size for each, so about memory_limit / 54,000
    /// bytes for 60-byte queries: 5,000 at the default 256MiB, 1,200 at 64MiB (refusals
    /// counted as `limit="memory_limit"`). The lower of the two applies: 10000 binds only
    /// with a memory_limit above about 515MiB (a cgroup limit of 688MiB or more when the
    /// default is taken from it).
    pub max_inflight: Option<usize>,
    /// A TCP client connection idle this long is closed, and so is one that has not sent a whole
    /// query this long (at least 1 s) after its first byte (RFC 7766 §6.2.3). Default `10s`.
    pub tcp_idle_timeout: Option<HumanDuration>,
    /// TCP client connections at once; further connections are refused. Default `1000`. Needs
    /// a restart to change.
    pub max_tcp_connections: Option<usize>,
    /// On SIGTERM, how long in-flight queries may finish before the process exits. Default
    /// `5s`.
    pub shutdown_grace: Option<HumanDuration>,
    /// One byte budget for what grows with traffic: the cache, queries waiting on upstreams,
    /// client TCP connections, the tracker's queue and its open walks (each gets a share; see
    /// docs/reference/metrics.md `ndots_memory_*`). What does not fit is refused and counted
    /// (SERVFAIL or a stale answer; tracker: whole walks shed as its queue fills, events
    /// dropped when it is full), never grown. `64MiB`, `1GiB`, or bytes. Default: 3/4 of the
    /// cgroup's memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) if there is one,
    /// else `256MiB`. Needs a restart to change.
    pub memory_limit: Option<ByteSize>,
    /// Answers made on a listener thread (cache hits, shortcut answers, refusals) to one
    /// client, of equal size and in the same receive batch, leave as one UDP segmentation
    /// offload (GSO) send, which the kernel cuts into the same datagrams (Linux 4.18+). It
    /// saves about an eighth of the CPU per answer for clients that pipeline on one socket
    /// (benches/README.md). Until the kernel cuts it, the send is one large packet: a capture
    /// on a veth or `any` (tcpdump, packet-based DNS monitoring) shows several answers in one
    /// datagram (tshark reads only the first of them; `ndots analyze` reads each), and firewall
    /// or eBPF rules that look at one packet see them together. Tested to a pod behind a veth
    /// through NOTRACK and through a conntrack DNAT (tests/node_local.rs). After a
    /// send the kernel refuses (an IPsec path, a smaller MTU), that worker sends one by one for
    /// a minute, then tries again (each refusal counted in `ndots_udp_segmented_sends_total`).
    /// Default `false`.
    pub udp_segmentation: Option<bool>,
}

/// `64MiB`, `512KiB`, `1GiB`, `100MB`, or a bare number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parse `64MiB`, `512KiB`, `1GiB`, `100MB`, `1.5GiB` or a bare number of bytes.
pub fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?}: expected e.g. 64MiB, 1GiB"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" | "Ki" => 1024.0,
        "MiB" | "Mi" => 1024.0 * 1024.0,
        "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "K" | "k" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        u => anyhow::bail!("invalid size {s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        anyhow::bail!("invalid size {s:?}");
    }
    Ok(bytes as u64)
}

/// A socket address written `IP:PORT` (`[v6]:PORT`), checked while parsing so the error carries
/// the YAML line.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_socket_addr(&s, None)
            .map(Addr)
            .map_err(serde::de::Error::custom)
    }
}

/// `2s`, `500ms`, `5m`, `1h`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) if n >= 0.0 && n.is_finite() => {
                Ok(HumanDuration(Duration::from_secs_f64(n)))
            }
            Raw::Num(n) => Err(serde::de::Error::custom(format!("invalid duration {n}"))),
            Raw::Text(s) => parse_duration(&s)
                .map(HumanDuration)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parse `2s`, `500ms`, `5m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?}: expected e.g. 2s, 500ms, 5m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => bail!("invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parse `IP:PORT`, `[v6]:PORT`, or a bare IP when `default_port` is given.
pub fn parse_socket_addr(s: &str, default_port: Option<u16>) -> anyhow::Result<SocketAddr> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Some(port) = default_port {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
    }
    bail!("invalid address {s:?}: expected IP:PORT, e.g. 127.0.0.1:53 or [::1]:53")
}

/// One upstream zone after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamZone {
    /// Lowercase, absolute (`cluster.local.`, `.` for the root).
    pub zone: String,
    pub servers: Vec<SocketAddr>,
    pub protocol: Protocol,
    pub timeout: Duration,
    /// `UpstreamSection::equivalent`.
    pub equivalent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub capacity: usize,
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub negative_max_ttl: u32,
    /// Seconds past expiry an entry may be served when upstreams fail (RFC 8767); 0 = never.
    pub serve_stale: u32,
    pub prefetch: bool,
    /// RFC 8767 §5 client response timer; zero = off.
    pub stale_after: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Lowercase, no trailing dot (`cluster.local`).
    pub domain: String,
    /// Pod search list shape; `*` stands for the namespace label.
    pub search: Vec<String>,
    pub node_search: Vec<String>,
}

impl ClusterConfig {
    /// The search list kubelet writes for a pod in a cluster with this domain
    /// (`<ns>.svc.<domain> svc.<domain> <domain>`, `cluster.search`'s default), and no node
    /// domains.
    pub fn kubernetes(domain: &str) -> ClusterConfig {
        ClusterConfig {
            domain: domain.into(),
            search: vec![
                format!("*.svc.{domain}"),
                format!("svc.{domain}"),
                domain.into(),
            ],
            node_search: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShortcutConfig {
    pub mode: ShortcutMode,
    /// Lowercase, no trailing dot.
    pub zones: Vec<String>,
    pub kubernetes_schema: bool,
    /// Names (and everything under them) never shortcut. Lowercase, no trailing dot.
    pub exempt: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    pub idle: Duration,
    pub max_open_walks: usize,
    /// Bound on namespaces with their own `ndots_namespace_*` series (the rest: `other`).
    pub namespace_series: usize,
}

/// Default `tracker.namespace_series`.
pub const DEFAULT_NAMESPACE_SERIES: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub workers: usize,
    pub max_inflight: usize,
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    pub shutdown_grace: Duration,
    /// `server.memory_limit` in bytes, the default already resolved.
    pub memory_limit: u64,
    pub udp_segmentation: bool,
}

/// The node-local setup after validation (present only when `node_local.enabled`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLocalConfig {
    /// Link name, at most 15 bytes (IFNAMSIZ - 1).
    pub interface: String,
    pub kind: LinkKind,
    pub addresses: Vec<IpAddr>,
    /// The DNS port on those addresses (added to `listen`, and matched by the NOTRACK rules).
    pub port: u16,
    pub notrack: bool,
    /// ACCEPT rules in the host's filter INPUT/OUTPUT chains (`node_local.firewall`).
    pub firewall: bool,
    /// The admin port, when the admin listener serves on the node-local addresses too (the
    /// liveness probe goes through them): the firewall admits it beside the DNS port.
    pub admin_port: Option<u16>,
}

/// NodeLocal DNSCache's address and link name, so ndots is a drop-in replacement.
pub const NODE_LOCAL_ADDRESS: &str = "169.254.20.10";
pub const NODE_LOCAL_INTERFACE: &str = "nodelocaldns";

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub cluster: ClusterConfig,
    pub upstreams: Vec<UpstreamZone>,
    pub cache: CacheConfig,
    pub shortcut: ShortcutConfig,
    pub tracker: TrackerConfig,
    pub server: ServerConfig,
    pub allow: Vec<Network>,
    pub node_local: Option<NodeLocalConfig>,
    /// `metrics.coredns_names`.
    pub coredns_names: bool,
    pub log: LogConfig,
    pub dnstap: Option<crate::tap::TapConfig>,
    pub admin_report: AdminReport,
}

/// Default `allow`: loopback, link-local (NodeLocal's address), and the private ranges pod and
/// node networks use (RFC 1918, RFC 6598 shared space, IPv6 ULA).
pub const DEFAULT_ALLOW: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// An address block `IP/PREFIX` (a bare IP is a /32 or /128).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Network {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Network> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip.parse().with_context(|| {
            format!("invalid network {s:?}: expected IP/PREFIX, e.g. 10.0.0.0/8")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .with_context(|| format!("invalid network {s:?}: prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The value types that parse from strings, described as strings for the generated reference.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $format:literal) => {
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "format": $format})
            }
        }
    };
}
string_schema!(Addr, "Addr", "IP:PORT");
string_schema!(HumanDuration, "Duration", "duration: 500ms, 2s, 5m, 1h");
string_schema!(ByteSize, "ByteSize", "size: 64MiB, 1GiB, or bytes");
string_schema!(Network, "Network", "CIDR");
string_schema!(Ip, "Ip", "IP address");

/// Flags that override the file (DESIGN §3: flags override the file).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    /// `(zone, server)`; a flag list replaces the file's upstreams entirely.
    pub upstreams: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub shortcut_mode: Option<ShortcutMode>,
    pub shortcut_zones: Vec<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--cluster-profile`: replaces the file's `cluster.profile`.
    pub profile: Option<Profile>,
}

impl FileConfig {
    /// A config file's text, which must set something. A document without a single key
    /// (empty, only comments, `---`, `~`) is rejected: it is what a writer leaves between
    /// truncating and writing, and read as the defaults it would move a node's DNS to
    /// /etc/resolv.conf's servers.
    pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
        let no_keys = match yaml_serde::from_str::<yaml_serde::Value>(text) {
            Ok(v) => v.is_null() || v.as_mapping().is_some_and(|m| m.is_empty()),
            // Not YAML: `parse` says where.
            Err(_) => text.trim().is_empty(),
        };
        if no_keys {
            bail!(
                "the file sets no key: it is empty, or being written (write a new file beside \
                 it and rename it into place); without --config the defaults apply"
            );
        }
        FileConfig::parse(text)
    }

    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Normalise a domain name from config: lowercase, no trailing dot, checked label lengths.
fn normalise_domain(key: &str, s: &str) -> anyhow::Result<String> {
    let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.len() > 253 {
        bail!("{key}: {s:?} is longer than 253 characters");
    }
    for label in d.split('.') {
        if d.is_empty() {
            break;
        }
        if label.is_empty() || label.len() > 63 {
            bail!("{key}: {s:?} has an empty label or one longer than 63 characters");
        }
    }
    Ok(d)
}

impl Config {
    /// Load from a file path (or the embedded default when `None`) and apply overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).with_context(|| {
                    format!(
                        "reading {} (give the path of a YAML config; configs/example.yaml \
                         documents every key)",
                        p.display()
                    )
                })?,
                p.display().to_string(),
            ),
            None => (EMBEDDED_DEFAULT.to_string(), "embedded default".to_string()),
        };
        let file = match path {
            Some(_) => FileConfig::parse_file(&text),
            None => FileConfig::parse(&text),
        }
        .with_context(|| format!("in {origin}"))?;
        Config::from_file_config(file, overrides).with_context(|| format!("in {origin}"))
    }

    pub fn from_file_config(f: FileConfig, o: &Overrides) -> anyhow::Result<Config> {
        let mut node_local = node_local_config(f.node_local.unwrap_or_default())?;
        let mut listen: Vec<SocketAddr> = if !o.listen.is_empty() {
            o.listen.clone()
        } else {
            match (f.listen, &node_local) {
                (Some(v), _) => v.into_iter().map(|a| a.0).collect(),
                // Node-local alone: serve only on its addresses.
                (None, Some(_)) => Vec::new(),
                (None, None) => vec!["127.0.0.1:1053".parse().unwrap()],
            }
        };
        if let Some(nl) = &node_local {
            for ip in &nl.addresses {
                let addr = SocketAddr::new(*ip, nl.port);
                if !listen.contains(&addr) {
                    listen.push(addr);
                }
            }
        }
        if listen.is_empty() {
            bail!("listen: at least one address is needed");
        }
        let admin = o.admin.or(f.admin.map(|a| a.0));
        if let (Some(nl), Some(a)) = (node_local.as_mut(), admin) {
            if a.ip().is_unspecified() || nl.addresses.contains(&a.ip()) {
                nl.admin_port = Some(a.port());
            }
        }

        let c = f.cluster.unwrap_or_default();
        let domain = normalise_domain(
            "cluster.domain",
            c.domain.as_deref().unwrap_or("cluster.local"),
        )?;
        let search = match c.search {
            Some(v) => v
                .iter()
                .map(|s| normalise_domain("cluster.search", s))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => ClusterConfig::kubernetes(&domain).search,
        };
        let profile = o.profile.or(c.profile);
        let node_search = match (c.node_search, profile) {
            (Some(v), _) => v,
            // The node's own domains, as kubelet appends them to every pod's search list: under
            // `dnsPolicy: Default` this file is the node's.
            (None, Some(p)) => p.node_search(&search_from_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            )),
            (None, None) => Vec::new(),
        }
        .iter()
        .map(|s| normalise_domain("cluster.node_search", s))
        .collect::<anyhow::Result<Vec<_>>>()?;

        let upstreams = if !o.upstreams.is_empty() {
            let mut zones: Vec<UpstreamZone> = Vec::new();
            for (zone, server) in &o.upstreams {
                let zone = absolute_zone(zone)?;
                match zones.iter_mut().find(|z| z.zone == zone) {
                    Some(z) => z.servers.push(*server),
                    None => zones.push(UpstreamZone {
                        zone,
                        servers: vec![*server],
                        protocol: Protocol::Udp,
                        timeout: DEFAULT_UPSTREAM_TIMEOUT,
                        equivalent: false,
                    }),
                }
            }
            zones
        } else {
            let sections = f.upstreams.unwrap_or_else(|| {
                vec![UpstreamSection {
                    zone: ".".into(),
                    servers: vec!["/etc/resolv.conf".into()],
                    protocol: Protocol::Udp,
                    timeout: None,
                    equivalent: false,
                }]
            });
            let mut zones = Vec::new();
            for (i, u) in sections.into_iter().enumerate() {
                let zone =
                    absolute_zone(&u.zone).with_context(|| format!("upstreams[{i}].zone"))?;
                let mut servers = Vec::new();
                for s in &u.servers {
                    let s = expand_env(s, |k| std::env::var(k).ok())
                        .with_context(|| format!("upstreams[{i}].servers"))?;
                    servers.extend(
                        resolve_server(&s).with_context(|| format!("upstreams[{i}].servers"))?,
                    );
                }
                if servers.is_empty() {
                    bail!("upstreams[{i}] (zone {zone}): no servers");
                }
                if zones.iter().any(|z: &UpstreamZone| z.zone == zone) {
                    bail!("upstreams[{i}]: zone {zone} is listed twice");
                }
                if u.equivalent && u.protocol == Protocol::Tcp {
                    bail!(
                        "upstreams[{i}] (zone {zone}): `equivalent` is for UDP zones (where an \
                         unanswered query is sent again); over TCP the next server is asked \
                         when one fails"
                    );
                }
                zones.push(UpstreamZone {
                    zone,
                    servers,
                    protocol: u.protocol,
                    timeout: u.timeout.map(|d| d.0).unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
                    equivalent: u.equivalent,
                });
            }
            zones
        };
        if upstreams.is_empty() {
            bail!("upstreams: at least one zone is needed");
        }

        let cs = f.cache.unwrap_or_default();
        let cache = CacheConfig {
            capacity: cs.capacity.unwrap_or(100_000),
            min_ttl: cs.min_ttl.unwrap_or(0),
            max_ttl: cs.max_ttl.unwrap_or(3600),
            negative_max_ttl: cs.negative_max_ttl.unwrap_or(30),
            serve_stale: cs.serve_stale.unwrap_or(3600),
            prefetch: cs.prefetch.unwrap_or(true),
            stale_after: cs
                .stale_after
                .map(|d| d.0)
                .unwrap_or(Duration::from_millis(1800)),
        };
        if cache.min_ttl > cache.max_ttl {
            bail!(
                "cache.min_ttl ({}) is above cache.max_ttl ({})",
                cache.min_ttl,
                cache.max_ttl
            );
        }

        let ss = f.shortcut.unwrap_or_default();
        // The profile's zones first, then the file's and the flags' (duplicates once).
        let mut zones: Vec<String> = Vec::new();
        let profile_zones = profile.map(|p| p.zones()).unwrap_or_default();
        for z in profile_zones.iter().map(|z| z.to_string()) {
            zones.push(z);
        }
        for z in &ss.zones.unwrap_or_default() {
            zones.push(normalise_domain("shortcut.zones", z)?);
        }
        for z in &o.shortcut_zones {
            zones.push(normalise_domain("--shortcut-zone", z)?);
        }
        let mut seen = std::collections::HashSet::new();
        zones.retain(|z| seen.insert(z.clone()));
        let exempt = ss
            .exempt
            .unwrap_or_default()
            .iter()
            .map(|z| normalise_domain("shortcut.exempt", z))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let shortcut = ShortcutConfig {
            mode: o.shortcut_mode.or(ss.mode).unwrap_or_default(),
            zones,
            kubernetes_schema: ss.kubernetes_schema.unwrap_or(true),
            exempt,
        };

        let ts = f.tracker.unwrap_or_default();
        let tracker = TrackerConfig {
            idle: ts.idle.map(|d| d.0).unwrap_or(Duration::from_secs(2)),
            max_open_walks: ts.max_open_walks.unwrap_or(200_000),
            namespace_series: ts.namespace_series.unwrap_or(DEFAULT_NAMESPACE_SERIES),
        };

        let sv = f.server.unwrap_or_default();
        let server = ServerConfig {
            workers: sv.workers.unwrap_or_else(default_workers).max(1),
            max_inflight: sv.max_inflight.unwrap_or(10_000).max(1),
            tcp_idle_timeout: sv
                .tcp_idle_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
            max_tcp_connections: sv.max_tcp_connections.unwrap_or(1000).max(1),
            shutdown_grace: sv
                .shutdown_grace
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(5)),
            memory_limit: sv
                .memory_limit
                .map(|b| b.0)
                .unwrap_or_else(crate::budget::default_limit),
            udp_segmentation: sv.udp_segmentation.unwrap_or(false),
        };
        if server.memory_limit < crate::budget::MIN_LIMIT {
            anyhow::bail!(
                "server.memory_limit {} is below the minimum of {} bytes (16MiB)",
                server.memory_limit,
                crate::budget::MIN_LIMIT
            );
        }

        let allow = match f.allow {
            Some(v) => v,
            None => DEFAULT_ALLOW
                .iter()
                .map(|n| n.parse().expect("static"))
                .collect(),
        };

        let ls = f.log.unwrap_or_default();
        let log = LogConfig {
            format: o.log_format.or(ls.format).unwrap_or_default(),
            queries: ls.queries.unwrap_or(false),
        };
        let dnstap = match f.dnstap {
            None => None,
            Some(d) => {
                let output = d.output.parse().context("dnstap.output")?;
                let messages = d.messages.unwrap_or_else(|| vec![DnstapMessage::Client]);
                if messages.is_empty() {
                    bail!("dnstap.messages: name client, forwarder or both (or drop the section)");
                }
                Some(crate::tap::TapConfig {
                    output,
                    client: messages.contains(&DnstapMessage::Client),
                    forwarder: messages.contains(&DnstapMessage::Forwarder),
                })
            }
        };

        Ok(Config {
            coredns_names: f.metrics.and_then(|m| m.coredns_names).unwrap_or(false),
            log,
            allow,
            node_local,
            dnstap,
            admin_report: f.admin_report.unwrap_or_default(),
            listen,
            admin,
            cluster: ClusterConfig {
                domain,
                search,
                node_search,
            },
            upstreams,
            cache,
            shortcut,
            tracker,
            server,
        })
    }
}

/// Check the `node_local` section; `None` when it is off.
fn node_local_config(s: NodeLocalSection) -> anyhow::Result<Option<NodeLocalConfig>> {
    if !s.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let interface = s
        .interface
        .unwrap_or_else(|| NODE_LOCAL_INTERFACE.to_string());
    // The kernel's rules for a link name (dev_valid_name): 1..=15 bytes, no '/', ':' or space.
    if interface.is_empty()
        || interface.len() > 15
        || interface == "."
        || interface == ".."
        || interface
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        bail!(
            "node_local.interface: {interface:?} is not a valid link name \
             (1 to 15 characters, no '/', ':' or spaces)"
        );
    }
    let addresses: Vec<IpAddr> = match s.addresses {
        Some(v) => v.into_iter().map(|a| a.0).collect(),
        None => vec![NODE_LOCAL_ADDRESS.parse().expect("static")],
    };
    if addresses.is_empty() {
        bail!("node_local.addresses: at least one address is needed when node_local is enabled");
    }
    for a in &addresses {
        if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
            bail!("node_local.addresses: {a} cannot be put on a link (unspecified, multicast or loopback)");
        }
    }
    let port = s.port.unwrap_or(53);
    if port == 0 {
        bail!("node_local.port: 0 is not a port a pod can be pointed at");
    }
    Ok(Some(NodeLocalConfig {
        interface,
        kind: s.kind.unwrap_or_default(),
        addresses,
        port,
        notrack: s.notrack.unwrap_or(false),
        firewall: s.firewall.unwrap_or(true),
        admin_port: None,
    }))
}

/// Half the cores, at least one: the tracker thread and the async runtime need the rest, and
/// on a node the proxy shares its cores with pods. Measured on 2 cores with the load generator
/// beside it: one UDP worker served 152k cache hits/s, two served 120k (benches/README.md).
fn default_workers() -> usize {
    (std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        / 2)
    .max(1)
}

pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// `cluster.local` -> `cluster.local.`, `.` stays `.`.
fn absolute_zone(z: &str) -> anyhow::Result<String> {
    let z = z.trim();
    if z == "." || z.is_empty() {
        return Ok(".".into());
    }
    Ok(format!("{}.", normalise_domain("zone", z)?))
}

/// Replace each `${NAME}` in `s` with `lookup(NAME)` (DESIGN §9: manifests name the cluster DNS
/// Service by the variables Kubernetes sets, `KUBE_DNS_UPSTREAM_SERVICE_HOST`). An unset or
/// empty variable is an error that names it: an upstream must never silently become "".
pub fn expand_env(s: &str, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            bail!("{s:?}: `${{` without a closing `}}`");
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            bail!("{s:?}: {name:?} is not an environment variable name");
        }
        match lookup(name) {
            Some(v) if !v.trim().is_empty() => out.push_str(v.trim()),
            Some(_) => bail!("environment variable {name} (in {s:?}) is empty"),
            None => bail!(
                "environment variable {name} (in {s:?}) is not set; for a Service's ClusterIP \
                 Kubernetes sets <NAME>_SERVICE_HOST in pods of its namespace created after it"
            ),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A server entry: `IP[:PORT]`, or a path to a resolv.conf whose nameservers are used.
fn resolve_server(s: &str) -> anyhow::Result<Vec<SocketAddr>> {
    if s.starts_with('/') {
        let path = PathBuf::from(s);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading nameservers from {}", path.display()))?;
        let servers = nameservers_from_resolv_conf(&text);
        if servers.is_empty() {
            bail!("{} lists no nameserver", path.display());
        }
        return Ok(servers);
    }
    Ok(vec![parse_socket_addr(s, Some(53))?])
}

/// The `nameserver` lines of a resolv.conf (port 53, as every libc uses).
pub fn nameservers_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip = w.next()?.split('%').next()?;
            ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file read between a writer's truncate and write, or one that never set anything, is
    /// not a config: read as the defaults it moved the proxy to resolv.conf's servers.
    #[test]
    fn a_config_file_that_sets_no_key_read_as_the_defaults() {
        for text in [
            "",
            " \n\n",
            "# only a comment\n",
            "---\n",
            "~\n",
            "null\n",
            "{}\n",
        ] {
            let e = FileConfig::parse_file(text).expect_err(text);
            assert!(e.to_string().contains("sets no key"), "{text:?}: {e}");
        }
        let f = FileConfig::parse_file("# comment\nlisten: [\"127.0.0.1:53\"]\n").unwrap();
        assert_eq!(f.listen.map(|l| l.len()), Some(1));
        // Not YAML: the parser's error, with its place, not "sets no key".
        let e = FileConfig::parse_file("listen: [\n").unwrap_err();
        assert!(!e.to_string().contains("sets no key"), "{e}");
    }

    #[test]
    fn embedded_default_is_valid() {
        let f = FileConfig::parse(EMBEDDED_DEFAULT).unwrap();
        let o = Overrides {
            upstreams: vec![(".".into(), "127.0.0.1:53".parse().unwrap())],
            ..Default::default()
        };
        let c = Config::from_file_config(f, &o).unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:1053".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.admin, Some("127.0.0.1:9255".parse().unwrap()));
        assert_eq!(c.shortcut.mode, ShortcutMode::Nxdomain);
        assert!(c.shortcut.kubernetes_schema);
    }

    /// `equivalent` is read, and refused for a TCP zone, where nothing is sent again.
    #[test]
    fn equivalent_servers_are_a_udp_zones_setting() {
        let zone = |protocol: &str| {
            let f = FileConfig::parse(&format!(
                "upstreams: [{{zone: \".\", servers: [\"127.0.0.1:53\", \"127.0.0.2:53\"], \
                 protocol: {protocol}, equivalent: true}}]\n"
            ))
            .unwrap();
            Config::from_file_config(f, &Overrides::default())
        };
        assert!(zone("udp").unwrap().upstreams[0].equivalent);
        let e = zone("tcp").unwrap_err();
        assert!(
            format!("{e:#}").contains("`equivalent` is for UDP zones"),
            "{e:#}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            FileConfig::parse("listen: [\"127.0.0.1:53\"]\ncache:\n  capacty: 5\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("capacty"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_address_is_named_with_its_line() {
        let err =
            FileConfig::parse("admin: \"127.0.0.1:9255\"\nlisten: [\"127.0.0.1\"]\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("invalid address"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn networks() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.244.1.5".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(
            n.contains("::ffff:10.1.2.3".parse().unwrap()),
            "v4-mapped client"
        );
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Network = "fc00::/7".parse().unwrap();
        assert!(v6.contains("fd00::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        let err = FileConfig::parse("allow: [\"10.0.0.0/8\", \"nonsense\"]").unwrap_err();
        assert!(format!("{err:#}").contains("invalid network"), "{err:#}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let t =
            "# c\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nsearch a b\nnameserver bogus\n";
        assert_eq!(
            nameservers_from_resolv_conf(t),
            vec![
                "10.96.0.10:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstream_flags_replace_file_and_group_by_zone() {
        let f =
            FileConfig::parse("upstreams:\n  - zone: .\n    servers: [\"9.9.9.9:53\"]\n").unwrap();
        let o = Overrides {
            upstreams: vec![
                ("cluster.local".into(), "127.0.0.1:5300".parse().unwrap()),
                ("cluster.local".into(), "127.0.0.1:5301".parse().unwrap()),
                (".".into(), "127.0.0.1:5302".parse().unwrap()),
            ],
            ..Default::default()
        };
        let c = Config::from_file_config(f, &o).unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[0].zone, "cluster.local.");
        assert_eq!(c.upstreams[0].servers.len(), 2);
    }

    #[test]
    fn node_local_adds_its_addresses_to_listen() {
        let up = "upstreams: [{zone: ., servers: [\"127.0.0.1\"]}]\n";
        let f = FileConfig::parse(&format!("{up}node_local: {{enabled: true}}\n")).unwrap();
        let c = Config::from_file_config(f, &Overrides::default()).unwrap();
        let nl = c.node_local.as_ref().unwrap();
        assert_eq!(nl.interface, "nodelocaldns");
        assert_eq!(nl.kind, LinkKind::Dummy);
        assert!(!nl.notrack);
        assert_eq!(c.listen, vec!["169.254.20.10:53".parse().unwrap()]);

        let text = format!(
            "{up}listen: [\"127.0.0.1:1053\", \"10.96.0.10:53\"]\nnode_local:\n  enabled: true\n  \
             addresses: [\"169.254.20.10\", \"10.96.0.10\"]\n  notrack: true\n"
        );
        let c = Config::from_file_config(FileConfig::parse(&text).unwrap(), &Overrides::default())
            .unwrap();
        let listen: Vec<SocketAddr> = ["127.0.0.1:1053", "10.96.0.10:53", "169.254.20.10:53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            c.listen, listen,
            "no duplicate for an address already listed"
        );

        let off = FileConfig::parse(&format!("{up}node_local: {{enabled: false}}\n")).unwrap();
        let c = Config::from_file_config(off, &Overrides::default()).unwrap();
        assert!(c.node_local.is_none());
        assert_eq!(c.listen, vec!["127.0.0.1:1053".parse().unwrap()]);
    }

    #[test]
    fn node_local_bad_values_are_named() {
        let err = FileConfig::parse(
            "node_local:\n  enabled: true\n  addresses: [\"169.254.20.10\", \"169.254.20.300\"]\n",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("invalid IP address"), "{msg}");
        assert!(msg.contains("169.254.20.300"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");

        let err = FileConfig::parse("node_local:\n  enabled: true\n  kind: vxlan\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");

        let up = "upstreams: [{zone: ., servers: [\"127.0.0.1\"]}]\n";
        for (section, key) in [
            (
                "{enabled: true, interface: \"a-name-that-is-too-long\"}",
                "node_local.interface",
            ),
            ("{enabled: true, addresses: []}", "node_local.addresses"),
            (
                "{enabled: true, addresses: [\"0.0.0.0\"]}",
                "node_local.addresses",
            ),
        ] {
            let f = FileConfig::parse(&format!("{up}node_local: {section}\n")).unwrap();
            let e = Config::from_file_config(f, &Overrides::default()).unwrap_err();
            assert!(format!("{e}").contains(key), "{section}: {e}");
        }
    }

    #[test]
    fn env_variables_in_upstreams_are_expanded_and_unset_ones_named() {
        let env = |k: &str| match k {
            "KUBE_DNS_UPSTREAM_SERVICE_HOST" => Some("10.100.0.10".to_string()),
            "V6" => Some("fd00:10:96::a".to_string()),
            "EMPTY" => Some(" ".to_string()),
            _ => None,
        };
        assert_eq!(
            expand_env("${KUBE_DNS_UPSTREAM_SERVICE_HOST}", env).unwrap(),
            "10.100.0.10"
        );
        assert_eq!(
            expand_env("[${V6}]:5353", env).unwrap(),
            "[fd00:10:96::a]:5353"
        );
        assert_eq!(expand_env("127.0.0.1:53", env).unwrap(), "127.0.0.1:53");
        assert_eq!(
            expand_env("$HOME", env).unwrap(),
            "$HOME",
            "only ${{...}} is expanded"
        );
        let e = expand_env("${KUBE_DNS_SERVICE_HOST}:53", env).unwrap_err();
        assert!(
            format!("{e}").contains("KUBE_DNS_SERVICE_HOST") && format!("{e}").contains("not set"),
            "{e}"
        );
        assert!(format!("{}", expand_env("${EMPTY}", env).unwrap_err()).contains("EMPTY"));
        for bad in ["${", "${A", "${}", "${1A}", "${A-B}"] {
            assert!(expand_env(bad, env).is_err(), "{bad}");
        }
        // Through the whole configuration: the error names the key and the variable.
        let f = FileConfig::parse(
            "upstreams: [{zone: ., servers: [\"${NDOTS_TEST_SURELY_UNSET_VARIABLE}\"]}]",
        )
        .unwrap();
        let e = Config::from_file_config(f, &Overrides::default()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("upstreams[0].servers")
                && msg.contains("NDOTS_TEST_SURELY_UNSET_VARIABLE"),
            "{msg}"
        );
    }

    #[test]
    fn profiles_pick_the_platforms_node_domains_and_add_zones() {
        let search = search_from_resolv_conf(
            "domain x\nsearch us-west-2.compute.internal corp.example.com\nnameserver 1.1.1.1\n",
        );
        assert_eq!(search, ["us-west-2.compute.internal", "corp.example.com"]);
        assert_eq!(
            Profile::Aws.node_search(&search),
            ["us-west-2.compute.internal"]
        );
        let gce: Vec<String> = "us-central1-a.c.proj.internal c.proj.internal google.internal"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(Profile::Gcp.node_search(&gce).len(), 3);
        assert!(Profile::Azure.node_search(&gce).is_empty());
        let aks = vec!["abc.bx.internal.cloudapp.net".to_string()];
        assert_eq!(Profile::Azure.node_search(&aks), aks);
        assert!(Profile::Kind.node_search(&search).is_empty());
        // Not a suffix on a label boundary.
        assert!(Profile::Aws
            .node_search(&["notec2.internal".into()])
            .is_empty());

        // The profile's zones come first, the file's follow, each once; an explicit
        // node_search wins over the profile's.
        let text = "upstreams: [{zone: ., servers: [\"127.0.0.1\"]}]\n\
                    cluster: {profile: aws, node_search: [ec2.internal]}\n\
                    shortcut: {zones: [github.com, amazonaws.com]}\n";
        let c = Config::from_file_config(FileConfig::parse(text).unwrap(), &Overrides::default())
            .unwrap();
        assert_eq!(c.cluster.node_search, ["ec2.internal"]);
        assert_eq!(
            c.shortcut.zones,
            [
                "ec2.internal",
                "compute.internal",
                "amazonaws.com",
                "github.com"
            ]
        );
        // The flag replaces the file's profile.
        let o = Overrides {
            profile: Some(Profile::Kind),
            ..Default::default()
        };
        let c = Config::from_file_config(FileConfig::parse(text).unwrap(), &o).unwrap();
        assert_eq!(c.shortcut.zones, ["github.com", "amazonaws.com"]);
        assert!(FileConfig::parse("cluster: {profile: openstack}").is_err());
    }

    #[test]
    fn admin_report_defaults_to_local_and_the_firewall_admits_the_admin_port() {
        let up = "upstreams: [{zone: ., servers: [\"127.0.0.1\"]}]\n";
        let c = Config::from_file_config(FileConfig::parse(up).unwrap(), &Overrides::default())
            .unwrap();
        assert_eq!(c.admin_report, AdminReport::Local);
        let f = FileConfig::parse(&format!(
            "{up}admin_report: public\nadmin: \"0.0.0.0:9255\"\nnode_local: {{enabled: true}}\n"
        ))
        .unwrap();
        let c = Config::from_file_config(f, &Overrides::default()).unwrap();
        assert_eq!(c.admin_report, AdminReport::Public);
        let nl = c.node_local.unwrap();
        assert!(nl.firewall, "on by default with node_local");
        assert_eq!(
            nl.admin_port,
            Some(9255),
            "0.0.0.0 covers the node-local address"
        );
        let f = FileConfig::parse(&format!(
            "{up}admin: \"127.0.0.1:9255\"\nnode_local: {{enabled: true, firewall: false}}\n"
        ))
        .unwrap();
        let nl = Config::from_file_config(f, &Overrides::default())
            .unwrap()
            .node_local
            .unwrap();
        assert!(!nl.firewall);
        assert_eq!(nl.admin_port, None, "loopback admin: nothing to admit");
        assert!(FileConfig::parse("admin_report: everyone").is_err());
    }

    #[test]
    fn min_ttl_above_max_is_rejected() {
        let f = FileConfig::parse(
            "cache: {min_ttl: 100, max_ttl: 10}\nupstreams: [{zone: ., servers: [\"1.1.1.1\"]}]",
        )
        .unwrap();
        let e = Config::from_file_config(f, &Overrides::default()).unwrap_err();
        assert!(format!("{e}").contains("min_ttl"));
    }
}
