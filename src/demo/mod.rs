//! `ndots demo`: the whole story on one machine, without root, network or a cluster.
//!
//! An in-process upstream ([`authority`]) serves a small cluster and a few external zones; the
//! proxy runs in front of it through the library (`proxy::start`), once per shortcut mode, each
//! on its own ephemeral port with an empty cache; simulated pods ([`world`]) look names up with
//! the search-path model (`search::Stub::walk`, the glibc and musl models checked against the
//! real libcs), each query going over real UDP to the proxy from the pod's own loopback
//! address. The same seeded traffic runs in every mode; the figures come from three places:
//! upstream load from the upstream's own counter, lookups and walks from the proxy's tracker,
//! latency from the pods' clocks.

pub mod authority;
mod text;
pub mod world;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::amplify::Report;
use crate::config::{Config, FileConfig, Overrides, ShortcutMode};
use crate::search::{Answer, Family, ResolverSettings, Stub};
use crate::wire;
use authority::Authority;
pub use text::text;
use world::{Planned, Pod, World};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoSettings {
    pub seed: u64,
    /// Lookups per run (each lookup is A and AAAA, as `getaddrinfo` with AF_UNSPEC asks).
    pub lookups: usize,
    pub pods_per_namespace: usize,
    /// Added before every upstream answer: the trip to kube-dns or the cloud resolver.
    pub upstream_delay: Duration,
    /// The shortcut modes compared with `off` (which always runs first).
    pub modes: Vec<ShortcutMode>,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            seed: 1,
            lookups: 3000,
            pods_per_namespace: 4,
            upstream_delay: Duration::from_millis(1),
            modes: vec![ShortcutMode::Nxdomain, ShortcutMode::Autopath],
        }
    }
}

/// The demo's result: one run per mode, `off` first. This is `ndots demo --format json`.
#[derive(Clone, Debug, Serialize)]
pub struct DemoResult {
    pub seed: u64,
    pub lookups: usize,
    pub pods: usize,
    pub glibc_pods: usize,
    pub musl_pods: usize,
    pub upstream_delay_ms: f64,
    pub search: String,
    pub runs: Vec<Run>,
    /// Lookups whose addresses differ from the `off` run's, over every other run.
    pub mismatched_lookups: usize,
    /// The first few mismatches, for a person to look at.
    pub mismatches: Vec<Mismatch>,
    /// Wall time of the whole demo.
    pub elapsed_seconds: f64,
}

/// One pass of the traffic through a proxy in one shortcut mode.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub mode: String,
    /// Lookups made by the pods (the same list in every run).
    pub lookups: usize,
    /// Queries the pods sent to the proxy.
    pub pod_queries: u64,
    /// A and AAAA queries that reached the upstream (cache misses the shortcut did not answer).
    pub upstream_queries: u64,
    /// Per lookup as the report counts them (one query type of one getaddrinfo call).
    pub upstream_queries_per_lookup: f64,
    /// Lookups that ended with addresses.
    pub resolved: usize,
    /// Per-lookup wall time on the pod's clock (both address families), in milliseconds.
    pub latency_ms: Latency,
    /// A digest of every lookup's answer (addresses, or none), in order: equal digests mean
    /// every lookup got the same answer.
    pub answers_digest: String,
    /// The proxy tracker's report (`/report`) after the run: walks, amplification, advice input.
    pub report: Report,
}

#[derive(Clone, Copy, Debug, Serialize, Default)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    pub mode: String,
    pub pod: String,
    pub name: String,
    pub off: Vec<IpAddr>,
    pub this: Vec<IpAddr>,
}

/// What one lookup got.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    addresses: Vec<IpAddr>,
    queries: usize,
    elapsed: Duration,
}

/// The search list of a pod in `namespace`, as kubelet writes it on a node of [`world`].
fn search_list(namespace: &str) -> String {
    format!(
        "{namespace}.svc.cluster.local svc.cluster.local cluster.local {}",
        world::NODE_DOMAIN
    )
}

pub fn run(settings: &DemoSettings) -> anyhow::Result<DemoResult> {
    let started = Instant::now();
    anyhow::ensure!(settings.lookups > 0, "--lookups must be at least 1");
    anyhow::ensure!(
        (1..=200).contains(&settings.pods_per_namespace),
        "--pods must be between 1 and 200 per namespace"
    );
    let world = Arc::new(World::new());
    let pods = world::pods(settings.pods_per_namespace, &mut world::rng(settings.seed));
    let plan = world::plan(&pods, settings.lookups, settings.seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ndots-demo")
        .enable_all()
        .build()?;

    let mut modes = vec![ShortcutMode::Off];
    modes.extend(
        settings
            .modes
            .iter()
            .copied()
            .filter(|m| *m != ShortcutMode::Off),
    );
    let mut runs = Vec::new();
    let mut outcomes: Vec<Vec<Outcome>> = Vec::new();
    for mode in modes {
        let (run, got) = run_mode(mode, &world, &pods, &plan, settings, &rt)
            .with_context(|| format!("the {} run", mode.as_str()))?;
        runs.push(run);
        outcomes.push(got);
    }

    let mut mismatched_lookups = 0;
    let mut mismatches = Vec::new();
    for (r, got) in runs.iter().zip(&outcomes).skip(1) {
        for (i, (off, this)) in outcomes[0].iter().zip(got).enumerate() {
            if off.addresses != this.addresses {
                mismatched_lookups += 1;
                if mismatches.len() < 10 {
                    mismatches.push(Mismatch {
                        mode: r.mode.clone(),
                        pod: pods[plan[i].pod].name.clone(),
                        name: plan[i].name.clone(),
                        off: off.addresses.clone(),
                        this: this.addresses.clone(),
                    });
                }
            }
        }
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(DemoResult {
        seed: settings.seed,
        lookups: settings.lookups,
        pods: pods.len(),
        glibc_pods: pods.iter().filter(|p| p.stub == Stub::Glibc).count(),
        musl_pods: pods.iter().filter(|p| p.stub.is_musl()).count(),
        upstream_delay_ms: settings.upstream_delay.as_secs_f64() * 1e3,
        search: search_list("<namespace>"),
        runs,
        mismatched_lookups,
        mismatches,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Start a fresh upstream and proxy for `mode`, play the plan through it, collect the figures.
fn run_mode(
    mode: ShortcutMode,
    world: &Arc<World>,
    pods: &[Pod],
    plan: &[Planned],
    settings: &DemoSettings,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Run, Vec<Outcome>)> {
    let upstream = Authority::start(world.clone(), settings.upstream_delay, rt.handle())?;
    let zones: Vec<String> = world::SHORTCUT_ZONES
        .iter()
        .map(|z| format!("{z:?}"))
        .collect();
    let yaml = format!(
        "listen: [\"127.0.0.1:0\"]\n\
         server: {{workers: 1}}\n\
         cluster: {{node_search: [{}]}}\n\
         shortcut: {{mode: {}, zones: [{}]}}\n",
        world::NODE_DOMAIN,
        mode.as_str(),
        zones.join(", ")
    );
    let overrides = Overrides {
        upstreams: vec![(".".into(), upstream.addr)],
        ..Default::default()
    };
    let mut cfg = Config::from_file_config(FileConfig::parse(&yaml)?, &overrides)?;
    cfg.admin = None;
    let proxy = crate::proxy::start(cfg, rt.handle())?;
    let proxy_addr = proxy.dns_addrs[0];

    let sockets = pods
        .iter()
        .map(|p| {
            let s = UdpSocket::bind((p.ip, 0)).with_context(|| {
                format!(
                    "binding {} (the demo gives each pod a loopback address)",
                    p.ip
                )
            })?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            Ok(s)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resolvers: Vec<ResolverSettings> = pods
        .iter()
        .map(|p| {
            let mut s = ResolverSettings::defaults(p.stub);
            s.set_ndots(5, p.stub);
            s.set_search(&search_list(p.namespace));
            s
        })
        .collect();

    let mut outcomes = Vec::with_capacity(plan.len());
    let mut id = 0u16;
    for step in plan {
        let pod = &pods[step.pod];
        outcomes.push(lookup(
            pod.stub,
            &step.name,
            &resolvers[step.pod],
            &sockets[step.pod],
            proxy_addr,
            &mut id,
        ));
    }

    proxy.tracker().sync(true);
    let mut report = proxy.tracker().report(None);
    report.source = format!("ndots demo, shortcut {}", mode.as_str());
    // The demo knows its pods' libc: the advice is computed per stub seen.
    for p in pods {
        let s = p.stub.as_str().to_string();
        if !report.stubs.contains(&s) {
            report.stubs.push(s);
        }
    }
    report.advise();
    let upstream_queries = upstream.address_queries();
    proxy.shutdown(Duration::from_millis(100));

    let pod_queries = outcomes.iter().map(|o| o.queries as u64).sum();
    let mut ms: Vec<f64> = outcomes
        .iter()
        .map(|o| o.elapsed.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let latency = Latency {
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
    };
    let run = Run {
        mode: mode.as_str().into(),
        lookups: plan.len(),
        pod_queries,
        upstream_queries,
        upstream_queries_per_lookup: upstream_queries as f64 / report.lookups.max(1) as f64,
        resolved: outcomes.iter().filter(|o| !o.addresses.is_empty()).count(),
        latency_ms: latency,
        answers_digest: digest(&outcomes),
        report,
    };
    Ok((run, outcomes))
}

/// One `getaddrinfo(name, AF_UNSPEC)` by a pod: the stub model decides which queries to send,
/// each goes to the proxy over UDP from the pod's socket.
fn lookup(
    stub: Stub,
    name: &str,
    settings: &ResolverSettings,
    socket: &UdpSocket,
    proxy: SocketAddr,
    id: &mut u16,
) -> Outcome {
    let started = Instant::now();
    let mut answered: Vec<(String, Vec<IpAddr>)> = Vec::new();
    let walk = stub.walk(name, Family::Unspec, settings, |qname, qtype| {
        *id = id.wrapping_add(1);
        let (answer, addrs) = exchange(socket, proxy, *id, qname, qtype);
        answered.push((qname.to_string(), addrs));
        answer
    });
    let mut addresses: Vec<IpAddr> = match &walk.result {
        Some(result) => answered
            .into_iter()
            .filter(|(q, _)| q == result)
            .flat_map(|(_, a)| a)
            .collect(),
        None => Vec::new(),
    };
    addresses.sort();
    addresses.dedup();
    Outcome {
        addresses,
        queries: walk.queries.len(),
        elapsed: started.elapsed(),
    }
}

/// Send one query and read the reply as the stub sees it: the answer kind and the addresses of
/// the asked type (a CNAME chain's final records included, as `getaddrinfo` follows it).
fn exchange(
    socket: &UdpSocket,
    proxy: SocketAddr,
    id: u16,
    qname: &str,
    qtype: u16,
) -> (Answer, Vec<IpAddr>) {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RData;
    let mut q = Vec::new();
    if wire::build_query(id, qname, qtype, false, &mut q).is_err()
        || socket.send_to(&q, proxy).is_err()
    {
        return (Answer::Timeout, Vec::new());
    }
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = socket.recv(&mut buf) else {
            return (Answer::Timeout, Vec::new());
        };
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if m.metadata.id != id {
            continue; // a late reply to an earlier query
        }
        let addrs: Vec<IpAddr> = m
            .answers
            .iter()
            .filter_map(|r| match (&r.data, qtype) {
                (RData::A(a), wire::TYPE_A) => Some(IpAddr::V4(a.0)),
                (RData::AAAA(a), wire::TYPE_AAAA) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        let answer = match m.metadata.response_code {
            ResponseCode::NoError if !addrs.is_empty() => Answer::Address,
            ResponseCode::NoError => Answer::NoData,
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::Refused => Answer::Refused,
            _ => Answer::ServFail,
        };
        return (answer, addrs);
    }
}

/// FNV-1a over every lookup's addresses in order: equal for runs with identical answers.
fn digest(outcomes: &[Outcome]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for o in outcomes {
        for a in &o.addresses {
            eat(a.to_string().as_bytes());
            eat(b",");
        }
        eat(b";");
    }
    format!("{h:016x}")
}
