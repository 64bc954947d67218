//! Real clients agree with the search-path model (issue 3, "Proof it must have").
//!
//! For every case below, six real resolvers look a name up in a private network + mount
//! namespace whose /etc/resolv.conf points at a scripted server on 127.0.0.1:53:
//! - glibc: `getent ahosts` for AF_UNSPEC, `getent ahostsv4` for AF_INET;
//! - musl: `tests/clients/musl_lookup.c`, built here with `musl-gcc -static`;
//! - Go's pure resolver: `tests/clients/go_lookup.go` (`net.DefaultResolver.LookupIP`), built
//!   here with the system `go` and `CGO_ENABLED=0`;
//! - c-ares: `tests/clients/cares_lookup.c` (`ares_getaddrinfo`), linked to the system libcares
//!   (Debian 12: 1.18.1), and `tests/clients/pycares_lookup.py`, the same call through pycares
//!   (scripts/deps/pip.txt), whose wheel carries c-ares 1.34;
//! - hickory-resolver: `tests/clients/hickory_lookup` (`lookup_ip`), a small crate with its own
//!   lock file, fetched before entering the namespace and built offline inside it.
//!
//! The server answers each name as the case says and records the queries. The recorded walk
//! must equal what `ndots simulate --stub MODEL --resolv-conf ... --format json` predicts, and
//! the name the client resolved (its canonical name) must equal the model's result. The model
//! follows the installed version: `musl-1.2.3` before musl 1.2.4, `go-1.19` before Go 1.20,
//! `c-ares-1.18` before c-ares 1.34 (`NDOTS_MUSL_STUB`, `NDOTS_GO_STUB`, `NDOTS_CARES_STUB`
//! override). Verified so far: Debian 12's glibc
//! 2.36, musl 1.2.3, Go 1.19.8 and c-ares 1.18.1; c-ares 1.34.9 (pycares 5.2.1);
//! hickory-resolver 0.26.3.
//!
//! Comparison: retries (the same qname and type sent again: glibc's switch to single-request
//! after a timeout, musl's resends on SERVFAIL) are dropped, keeping first occurrences; the
//! A and AAAA queries of one candidate are compared as a set, since both go out at once.
//! Every case uses `options timeout:1 attempts:1 retrans:1000 retry:1` (the last two are
//! c-ares 1.18's names for the first two) so a "no reply" case costs about a second.
//!
//! Checking a new libc version (or another distribution's): run this test where that libc is
//! the system one (glibc: `getent` of the image; musl: point `MUSL_GCC` at that musl's
//! `musl-gcc` wrapper; Go: `GO`; c-ares: `CC` with that libcares installed, or another
//! pycares; hickory: the version in its Cargo.toml), as root, e.g. in a container
//! (`NDOTS_REAL_CLIENTS=go,c-ares` and `NDOTS_REAL_CASES=id,id` narrow the run):
//!
//! ```text
//! CI=true cargo test --test real_clients -- --nocapture
//! ```
//!
//! Each case prints `ok` or `MISMATCH` with the model's and the client's walks side by side.
//! A mismatch is a behaviour change: read the resolver's source for it, update
//! `../shared/resolvers.md` and the stub model in `src/search/stub.rs` (with a case here that
//! pins it), and keep the old behaviour selectable if both versions are in use. Without root
//! the test is skipped with a message, and fails instead under `CI=true`.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use common::clients::{self, family_arg, ClientEnv};
use common::netns;
use common::scripted_dns::ScriptedDns;
use ndots::event::qtype_from_name;
use ndots::search::name::absolute;
use ndots::search::{Answer, Environment, Family, ResolverSettings, Stub};

const K8S: &str = "default.svc.cluster.local svc.cluster.local cluster.local ec2.internal";

struct Case {
    id: &'static str,
    name: String,
    family: Family,
    /// resolv.conf without nameserver and timeout lines (the harness adds them).
    conf: String,
    /// `NAME` or `NAME/TYPE` and its answer; every other query is NXDOMAIN.
    answers: Vec<(String, Answer)>,
    /// `LOCALDOMAIN` and `RES_OPTIONS` for the client (glibc reads them, musl does not).
    localdomain: Option<&'static str>,
    res_options: Option<&'static str>,
}

fn pod(ndots: u32, extra: &str) -> String {
    format!("search {K8S}\noptions ndots:{ndots} {extra}\n")
}

fn case(
    id: &'static str,
    name: &str,
    family: Family,
    conf: String,
    answers: &[(&str, Answer)],
) -> Case {
    Case {
        id,
        name: name.to_string(),
        family,
        conf,
        answers: answers.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        localdomain: None,
        res_options: None,
    }
}

fn cases() -> Vec<Case> {
    use Answer::*;
    use Family::*;
    let long_name = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
    let long_domain = "this-is-a-long-node-domain.with-several-labels.example.internal.net"; // 66
    let long_search_line = (0..14)
        .map(|i| format!("d{i:02}.longline.example"))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        // order d < ndots: every search domain, then the name as-is.
        case("external-name-resolves-last", "api.github.com", Unspec, pod(5, ""), &[("api.github.com", Address)]),
        case("short-name-resolves-first", "web", Unspec, pod(5, ""), &[("web.default.svc.cluster.local", Address)]),
        case("name-dot-namespace-resolves-at-svc", "web.prod", Unspec, pod(5, ""), &[("web.prod.svc.cluster.local", Address)]),
        case("nxdomain-everywhere", "nothere", Unspec, pod(5, ""), &[]),
        // order d >= ndots: as-is first (glibc then searches; musl never does).
        case("enough-dots-as-is-exists", "a.b.c", Unspec, pod(2, ""), &[("a.b.c", Address)]),
        case("enough-dots-falls-back-to-search", "a.b.c", Unspec, pod(2, ""), &[("a.b.c.svc.cluster.local", Address)]),
        // trailing dot: as-is only.
        case("trailing-dot-short", "web.", Unspec, pod(5, ""), &[("web.default.svc.cluster.local", Address)]),
        case("trailing-dot-external", "api.github.com.", Unspec, pod(5, ""), &[("api.github.com", Address)]),
        // NODATA: glibc continues, musl stops.
        case("nodata-first-candidate", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local", NoData),
            ("web.svc.cluster.local", Address),
        ]),
        case("nodata-single-family", "web", Inet, pod(5, ""), &[
            ("web.default.svc.cluster.local", NoData),
            ("web.cluster.local", Address),
        ]),
        // SERVFAIL: glibc continues, musl stops (EAI_AGAIN).
        case("servfail-first-candidate", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local", ServFail),
            ("web.svc.cluster.local", Address),
        ]),
        case("servfail-single-family", "web", Inet, pod(5, ""), &[
            ("web.default.svc.cluster.local", ServFail),
            ("web.ec2.internal", Address),
        ]),
        // REFUSED: glibc stops the search but still tries the name as-is; musl stops.
        case("refused-first-candidate", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local", Refused),
            ("web.svc.cluster.local", Address),
        ]),
        case("refused-then-as-is-exists", "web", Inet, pod(5, ""), &[
            ("web.svc.cluster.local", Refused),
            ("web", Address),
        ]),
        // timeout: like REFUSED for glibc; musl stops.
        case("timeout-first-candidate", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local", Timeout),
            ("web.svc.cluster.local", Address),
        ]),
        // The first as-is try of a d >= ndots name falls through on any failure (glibc).
        case("servfail-as-is-first", "a.b", Unspec, pod(1, ""), &[
            ("a.b", ServFail),
            ("a.b.default.svc.cluster.local", Address),
        ]),
        case("timeout-as-is-first", "a.b", Inet, pod(1, ""), &[
            ("a.b", Timeout),
            ("a.b.svc.cluster.local", Address),
        ]),
        // A answered + AAAA NXDOMAIN: success for glibc; musl treats the candidate as NXDOMAIN.
        case("a-only-then-nxdomain-aaaa", "web", Unspec, pod(5, ""), &[("web.default.svc.cluster.local/A", Address)]),
        case("aaaa-only-then-nxdomain-a", "web", Unspec, pod(5, ""), &[("web.svc.cluster.local/AAAA", Address)]),
        // One query of the pair fails: musl reads the A reply first.
        case("a-nxdomain-aaaa-servfail", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/AAAA", ServFail),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-servfail-aaaa-nxdomain", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", ServFail),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-nxdomain-aaaa-timeout", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/AAAA", Timeout),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-timeout-aaaa-nxdomain", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", Timeout),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-refused-aaaa-nodata", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", Refused),
            ("web.default.svc.cluster.local/AAAA", NoData),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-servfail-aaaa-refused", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", ServFail),
            ("web.default.svc.cluster.local/AAAA", Refused),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-address-aaaa-servfail", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", Address),
            ("web.default.svc.cluster.local/AAAA", ServFail),
        ]),
        case("a-timeout-aaaa-address", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", Timeout),
            ("web.default.svc.cluster.local/AAAA", Address),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-servfail-aaaa-timeout", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", ServFail),
            ("web.default.svc.cluster.local/AAAA", Timeout),
            ("web.svc.cluster.local", Address),
        ]),
        case("a-refused-aaaa-servfail", "web", Unspec, pod(5, ""), &[
            ("web.default.svc.cluster.local/A", Refused),
            ("web.default.svc.cluster.local/AAAA", ServFail),
            ("web.svc.cluster.local", Address),
        ]),
        case("nodata-everywhere", "web.prod", Unspec, pod(5, ""), &[
            ("web.prod.default.svc.cluster.local", NoData),
            ("web.prod.svc.cluster.local", NoData),
            ("web.prod.cluster.local", NoData),
            ("web.prod.ec2.internal", NoData),
            ("web.prod", NoData),
        ]),
        case("servfail-on-the-last-candidate", "web", Inet, pod(5, ""), &[("web", ServFail)]),
        case("timeout-single-family", "web", Inet, pod(5, ""), &[
            ("web.svc.cluster.local", Timeout),
            ("web", Address),
        ]),
        // single-request: A, then AAAA after the A reply.
        case("single-request-a-timeout", "web", Unspec, pod(5, "single-request"), &[
            ("web.default.svc.cluster.local/A", Timeout),
            ("web.svc.cluster.local", Address),
        ]),
        case("single-request-nxdomain", "web", Unspec, pod(5, "single-request-reopen"), &[("web.cluster.local", Address)]),
        // Single-family walk (AF_INET): A only.
        case("inet-external-name", "api.github.com", Inet, pod(5, ""), &[("api.github.com", Address)]),
        // ndots cap 15: 15 dots reach the capped ndots, so the name goes as-is first.
        case("ndots-capped-at-15", "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", Inet, pod(20, ""), &[(
            "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.default.svc.cluster.local",
            Address,
        )]),
        // ndots 3 and 4 at and below the threshold.
        case("ndots-3-name-with-3-dots", "a.b.c.d", Inet, pod(3, ""), &[("a.b.c.d.cluster.local", Address)]),
        case("ndots-4-name-with-3-dots", "w.x.y.z", Unspec, pod(4, ""), &[("w.x.y.z.svc.cluster.local", Address)]),
        // REFUSED on the first as-is try of a name with enough dots.
        case("refused-as-is-first", "a.b", Unspec, pod(1, ""), &[
            ("a.b", Refused),
            ("a.b.svc.cluster.local", Address),
        ]),
        // ndots:0: musl never searches, glibc tries as-is first and then searches.
        case("ndots-zero", "web", Inet, pod(0, ""), &[("web.svc.cluster.local", Address)]),
        // glibc no-tld-query: no final as-is query for a dotless name; musl ignores it.
        case("no-tld-query", "nothere", Inet, pod(5, "no-tld-query"), &[]),
        // glibc no-aaaa: A only for AF_UNSPEC; musl ignores it.
        case("no-aaaa", "web", Unspec, pod(5, "no-aaaa"), &[("web.svc.cluster.local", Address)]),
        // musl ignores a resolv.conf line of 256 bytes or more; glibc reads it.
        case(
            "search-line-over-255-bytes",
            "x",
            Inet,
            format!("search first.example\nsearch {long_search_line}\noptions ndots:5\n"),
            &[],
        ),
        // A candidate longer than 255 wire bytes: glibc stops the search (then as-is), musl
        // skips it.
        case("candidate-too-long", &long_name, Inet, format!("search {long_domain} x.example\noptions ndots:5\n"), &[]),
        // RFC 7686 .onion: Go 1.20+ skips only the candidates under onion. (here the name as
        // written), Go 1.19 sends nothing at all (nameList: avoidDNS of the whole name).
        case("onion-name", "x.onion", Inet, pod(5, ""), &[]),
        // A rooted name of 254 characters (253 and the dot, the longest there is): Go 1.19's
        // nameList refuses it (`l == 254 && rooted`), Go 1.20+ sends it.
        case("rooted-name-of-254-characters", &format!("{long_name}.{}.", "d".repeat(61)), Inet, pod(5, ""), &[]),
        // Without the dot, 254 characters is one too many (isDomainName): no query from Go.
        case("unrooted-name-of-254-characters", &format!("{long_name}.{}", "d".repeat(62)), Inet, pod(5, ""), &[]),
        // domain/search: the last one wins; trailing dots; comments.
        case(
            "domain-after-search-wins",
            "web",
            Inet,
            "search a.example b.example\ndomain c.example\noptions ndots:5\n".into(),
            &[],
        ),
        // A `domain` line with two words: glibc keeps the first, musl takes both.
        case(
            "domain-line-with-two-words",
            "web",
            Inet,
            "domain c.example d.example\noptions ndots:5\n".into(),
            &[("web.d.example", Address)],
        ),
        // Repeated option: glibc parses every word (the last wins), musl finds the first.
        case(
            "repeated-ndots-option",
            "a.b",
            Inet,
            format!("search {K8S}\noptions ndots:3 ndots:1\n"),
            &[("a.b", Address)],
        ),
        case("negative-ndots", "a.b", Inet, pod(0, "ndots:-1"), &[("a.b", Address)]),
        case(
            "trailing-dots-and-comments",
            "web",
            Unspec,
            "# search evil.example\n; options ndots:1\nsearch default.svc.cluster.local. svc.cluster.local.\noptions ndots:5\n"
                .into(),
            &[("web.svc.cluster.local", Address)],
        ),
        // A root search entry: glibc sends "web." in its place, musl skips "web.." and ends
        // with "web.".
        case("root-in-search-list", "web", Inet, "search a.example .\noptions ndots:5\n".into(), &[]),
        // KEP-4427 lets `dnsConfig.searches` hold ".". kubelet appends dnsConfig.searches to
        // the cluster's list (ClusterFirst), or writes them alone (dnsPolicy: None), which can
        // put the root first.
        case("kep-4427-root-appended", "web", Unspec, format!("search {K8S} .\noptions ndots:5\n"), &[(
            "web.cluster.local",
            Address,
        )]),
        case("kep-4427-root-only", "api.github.com", Unspec, "search .\noptions ndots:5\n".into(), &[(
            "api.github.com",
            Address,
        )]),
        case("kep-4427-root-first", "web", Unspec, format!("search . {K8S}\noptions ndots:5\n"), &[(
            "web.svc.cluster.local",
            Address,
        )]),
        case("kep-4427-root-first-external", "api.github.com", Inet, format!("search . {K8S}\noptions ndots:5\n"), &[(
            "api.github.com",
            Address,
        )]),
        // No search list at all (dnsPolicy: None without searches); the host name has no
        // domain in the namespace.
        case("no-search-list", "web", Unspec, "options ndots:5\n".into(), &[]),
        case("no-search-list-dotted", "web.prod", Inet, "options ndots:1\n".into(), &[]),
        // Underscores: glibc looks the name up, musl refuses it without a query.
        case("underscore-name", "_http._tcp.web", Inet, pod(5, ""), &[]),
        // Options that do not change the walk are parsed and ignored.
        case("unknown-options-ignored", "web", Inet, pod(5, "rotate edns0 trust-ad bogus-option"), &[(
            "web.cluster.local",
            Address,
        )]),
        // The environment: glibc reads LOCALDOMAIN and RES_OPTIONS after the file; musl never.
        Case {
            res_options: Some("ndots:1"),
            ..case("res-options-ndots", "web.prod", Inet, pod(5, ""), &[("web.prod.svc.cluster.local", Address)])
        },
        Case {
            localdomain: Some("x.example y.example"),
            ..case("localdomain-replaces-search", "web", Inet, pod(5, ""), &[("web.y.example", Address)])
        },
        Case {
            localdomain: Some(""),
            ..case("empty-localdomain-is-root", "web", Inet, pod(5, ""), &[])
        },
    ]
}

/// `(qname, qtype)` groups: consecutive queries for one candidate, types as a set, after
/// dropping repeats of a `(qname, qtype)` already seen.
fn grouped(seq: &[(String, u16)]) -> Vec<(String, BTreeSet<u16>)> {
    let mut seen = HashSet::new();
    let mut out: Vec<(String, BTreeSet<u16>)> = Vec::new();
    for (n, t) in seq {
        if !seen.insert((n.clone(), *t)) {
            continue;
        }
        match out.last_mut() {
            Some((last, types)) if last == n => {
                types.insert(*t);
            }
            _ => out.push((n.clone(), BTreeSet::from([*t]))),
        }
    }
    out
}

fn spec_key(spec: &str) -> (String, Option<u16>) {
    match spec.rsplit_once('/') {
        Some((n, t)) => (absolute(n), Some(qtype_from_name(t).expect("type"))),
        None => (absolute(spec), None),
    }
}

fn flag(a: Answer) -> &'static str {
    match a {
        Answer::Address => "--exists",
        Answer::NoData => "--nodata",
        Answer::NxDomain => unreachable!("NXDOMAIN is the default"),
        Answer::ServFail => "--servfail",
        Answer::Refused => "--refused",
        Answer::Timeout => "--timeout",
    }
}

/// What `ndots simulate` predicts: the queries and the resolved name. `simulate` models a pod
/// and does not read the environment, so cases with environment variables ask the library.
fn model(stub: &str, c: &Case, conf_path: &Path) -> (Vec<(String, u16)>, Option<String>) {
    if c.localdomain.is_some() || c.res_options.is_some() {
        let stub: Stub = stub.parse().unwrap();
        let env = Environment {
            localdomain: c.localdomain,
            res_options: c.res_options,
            hostname: None,
        };
        let text = std::fs::read_to_string(conf_path).unwrap();
        let settings = ResolverSettings::from_resolv_conf(&text, stub, &env);
        let table: HashMap<(String, Option<u16>), Answer> = c
            .answers
            .iter()
            .map(|(spec, a)| (spec_key(spec), *a))
            .collect();
        let walk = stub.walk(&c.name, c.family, &settings, |q, t| {
            let q = q.to_string();
            table
                .get(&(q.clone(), Some(t)))
                .or_else(|| table.get(&(q, None)))
                .copied()
                .unwrap_or(Answer::NxDomain)
        });
        return (
            walk.queries
                .into_iter()
                .map(|q| (q.qname, q.qtype))
                .collect(),
            walk.result,
        );
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ndots"));
    cmd.args([
        "simulate",
        "--format",
        "json",
        "--stub",
        stub,
        "--family",
        family_arg(c.family),
    ]);
    cmd.arg("--resolv-conf").arg(conf_path);
    for (spec, a) in &c.answers {
        cmd.args([flag(*a), spec]);
    }
    cmd.arg("--").arg(&c.name);
    let out = cmd.output().expect("running ndots simulate");
    assert!(
        out.status.success(),
        "ndots simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("simulate JSON");
    let queries = v["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["qname"].as_str().unwrap().to_string(),
                qtype_from_name(q["qtype"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let resolved = v["result"]["qname"].as_str().map(str::to_string);
    (queries, resolved)
}

/// A real client, and the model it is checked against.
struct Client {
    /// `glibc`, `musl`, `go`, `c-ares`: the column in the output.
    label: &'static str,
    /// The `--stub` of the model (`musl-1.2.3`, `c-ares-1.18`, ... by the installed version).
    model: String,
    /// The client built by the test; `None` for glibc (`getent`).
    bin: Option<std::path::PathBuf>,
}

impl Client {
    /// Look the name up; returns the canonical name it resolved, absolute.
    fn lookup(&self, c: &Case) -> Option<String> {
        let env = ClientEnv {
            localdomain: c.localdomain,
            res_options: c.res_options,
        };
        match &self.bin {
            None => clients::glibc_lookup(&c.name, c.family, env),
            Some(bin) => clients::built_client_lookup(bin, &c.name, c.family, env),
        }
    }
}

#[test]
fn real_clients_walk_like_the_models() {
    if std::env::var(netns::CHILD_ENV).is_err() {
        clients::fetch_hickory_client();
    }
    let Some(ns) = netns::enter("real_clients_walk_like_the_models") else {
        return;
    };
    let server = ScriptedDns::start("127.0.0.1:53".parse().unwrap())
        .expect("binding 127.0.0.1:53 in the namespace");
    let conf_path = ns.scratch().join("case-resolv.conf");

    let mut clients = vec![Client {
        label: "glibc",
        model: "glibc".into(),
        bin: None,
    }];
    if let Some(bin) = clients::build_musl_client(ns.scratch()) {
        clients.push(Client {
            label: "musl",
            model: clients::musl_model(),
            bin: Some(bin),
        });
    }
    if let Some((bin, version)) = clients::build_go_client(ns.scratch()) {
        println!("Go client: {version}, CGO_ENABLED=0");
        clients.push(Client {
            label: "go",
            model: clients::go_model(&version),
            bin: Some(bin),
        });
    }
    if let Some((bin, version)) = clients::build_cares_client(ns.scratch()) {
        println!("c-ares client: libcares {version}");
        clients.push(Client {
            label: "c-ares",
            model: clients::cares_model(&version),
            bin: Some(bin),
        });
    }
    if let Some((bin, version)) = clients::pycares_client(ns.scratch()) {
        println!("pycares client: c-ares {version}");
        clients.push(Client {
            label: "pycares",
            model: clients::cares_model(&version),
            bin: Some(bin),
        });
    }
    if let Some((bin, version)) = clients::build_hickory_client() {
        println!("hickory client: hickory-resolver {version}");
        clients.push(Client {
            label: "hickory",
            model: "hickory".into(),
            bin: Some(bin),
        });
    }
    // NDOTS_REAL_CLIENTS=go,c-ares runs only those (while checking a new version).
    if let Ok(only) = std::env::var("NDOTS_REAL_CLIENTS") {
        clients.retain(|c| only.split(',').any(|o| o == c.label));
    }
    let models: Vec<String> = clients
        .iter()
        .map(|c| format!("{}: {}", c.label, c.model))
        .collect();
    println!("models: {}", models.join(", "));
    let mut cases = cases();
    // NDOTS_REAL_CASES=id,id runs only those cases (while chasing a mismatch).
    if let Ok(only) = std::env::var("NDOTS_REAL_CASES") {
        cases.retain(|c| only.split(',').any(|o| o == c.id));
    }
    let mut matched = std::collections::BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for c in &cases {
        let conf = format!(
            "nameserver 127.0.0.1\n{}options timeout:1 attempts:1 retrans:1000 retry:1\n",
            c.conf
        );
        std::fs::write(&conf_path, &conf).unwrap();
        ns.set_resolv_conf(&conf);
        server.set_answers(c.answers.iter().map(|(spec, a)| {
            let (n, t) = spec_key(spec);
            (n, t, *a)
        }));
        for client in &clients {
            let stub = client.label;
            let (want_queries, want_result) = model(&client.model, c, &conf_path);
            server.take_log();
            let got_result = client.lookup(c);
            let got_raw = server.take_log();
            let (want, got) = (grouped(&want_queries), grouped(&got_raw));
            let ok = want == got && want_result == got_result;
            let retries = got_raw.len() - got.iter().map(|(_, t)| t.len()).sum::<usize>();
            println!(
                "{} {stub:<7} {:<36} {} queries, {} retries, resolved {:?}",
                if ok { "ok      " } else { "MISMATCH" },
                c.id,
                want_queries.len(),
                retries,
                got_result
            );
            if ok {
                *matched.entry(stub).or_default() += 1;
            } else {
                println!("    model:  {want:?} -> {want_result:?}\n    client: {got:?} -> {got_result:?}");
                failures.push(format!("{stub} {}", c.id));
            }
        }
    }
    println!("matched per client: {matched:?} of {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "walks differ from the model: {failures:?}"
    );
    for client in &clients {
        let n = matched.get(client.label).copied().unwrap_or(0);
        assert_eq!(n, cases.len(), "{}: {n} cases", client.label);
    }
}

/// `ndots simulate --pod-dns-config` walks as the resolv.conf kubelet writes for the manifest:
/// KEP-4427's `searches: ["."]` with `dnsPolicy: None` leaves the root as the only suffix, so
/// musl before 1.2.4 sends nothing for a name it searches (as its real client did above, case
/// kep-4427-root-only) and glibc sends the name once; appended to ClusterFirst it comes after
/// the cluster's list.
#[test]
fn pod_dns_config_walks_like_the_resolv_conf_kubelet_writes() {
    let dir = tempfile::tempdir().unwrap();
    let simulate = |manifest: &str, stub: &str, name: &str| -> Vec<String> {
        let path = dir.path().join("pod.yaml");
        std::fs::write(&path, manifest).unwrap();
        let v = common::tools::run_json(
            Command::new(env!("CARGO_BIN_EXE_ndots"))
                .args([
                    "simulate", "--format", "json", "--family", "inet", "--stub", stub,
                ])
                .arg("--pod-dns-config")
                .arg(&path)
                .args(["--namespace", "shop", "--", name]),
        );
        v["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["qname"].as_str().unwrap().to_string())
            .collect()
    };
    let none = "kind: Pod\nspec:\n  dnsPolicy: None\n  dnsConfig:\n    nameservers: [10.96.0.10]\n    searches: [\".\"]\n";
    // No options: ndots is the resolvers' default 1, so only a dotless name is searched.
    assert!(simulate(none, "musl-1.2.3", "web").is_empty());
    assert_eq!(simulate(none, "glibc", "web"), ["web."]);
    assert_eq!(
        simulate(none, "musl-1.2.3", "api.github.com"),
        ["api.github.com."]
    );
    let appended = "kind: Pod\nmetadata: {namespace: web}\nspec:\n  dnsConfig:\n    searches: [\".\"]\n    options: [{name: ndots, value: \"2\"}]\n";
    assert_eq!(
        simulate(appended, "glibc", "api"),
        [
            "api.web.svc.cluster.local.",
            "api.svc.cluster.local.",
            "api.cluster.local.",
            "api."
        ]
    );
    // ndots:2 from dnsConfig: a name with two dots goes as-is first.
    assert_eq!(simulate(appended, "musl", "a.b.c"), ["a.b.c."]);
}
