//! Stub resolver models: which names a stub sends for one lookup, in which order, and which
//! answers end the walk (resolvers.md, "Summary"). Every rule cites the source that decides it.
//!
//! A walk is driven by an oracle that says how each `(qname, qtype)` is answered, so the same
//! model serves `ndots simulate` (answers from flags), replay (answers from a capture) and the
//! real-client test (answers from the scripted server's table).
//!
//! `tests/real_clients.rs` checks the models against the real resolvers (glibc 2.36, musl
//! 1.2.3, Go 1.19.8 with CGO_ENABLED=0, c-ares 1.18.1, hickory-resolver 0.26.3). It settled
//! these points that resolvers.md did not:
//! - glibc, A/AAAA pair: no A reply ends the search like a timeout, even when AAAA answered
//!   with addresses (send_dg retries in single-request mode, where AAAA waits for A). When
//!   both queries fail, the A reply's rcode decides: SERVFAIL goes on, REFUSED stops. One
//!   usable reply (NXDOMAIN, NODATA) of either type keeps the search going.
//! - glibc single-request(-reopen): after an A timeout the AAAA query is not sent.
//! - musl sends names with '_' (only the length is checked before the search).
//! - musl before 1.2.4 ends the walk at a candidate it cannot encode (a `.` search entry);
//!   1.2.4 and later move on ([`Stub::MuslPre124`] vs [`Stub::Musl`]).
//! - c-ares: without addresses the query that finished last decides, and a query without a
//!   reply finishes last (A timeout + AAAA NXDOMAIN stops the search).
//! - c-ares (1.18.1 and 1.34.9) ends the lookup at a candidate it cannot encode, and 1.34
//!   takes `LOCALDOMAIN=""` as an empty search list.
//! - c-ares 1.18 differs enough from 1.34 to be its own model ([`Stub::CAres118`]): SERVFAIL
//!   and REFUSED always stop, a root search entry ends the lookup, and its resolv.conf
//!   reading differs (resolv_conf.rs).
//! - hickory-resolver goes on after every failure, like Go, but tries the system domain (the
//!   `domain` line, else the host name's domain) before the search list.
//! - Go 1.19 (Debian 12's 1.19.8) never searches a `.onion` name and refuses a rooted name of
//!   254 characters; Go 1.20+ skips only `.onion` candidates and sends that rooted name
//!   (cases onion-name and rooted-name-of-254-characters): [`Stub::Go119`] vs [`Stub::Go`].

use std::fmt;
use std::str::FromStr;

use super::name::{encodable, in_zone};
use super::resolv_conf::ResolverSettings;

pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

/// A stub resolver implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stub {
    /// glibc `getaddrinfo` through nss_dns (resolv/res_query.c, nss_dns/dns-host.c).
    Glibc,
    /// musl 1.2.4+ `getaddrinfo` (src/network/lookup_name.c), as in Alpine 3.18 and later.
    Musl,
    /// musl before 1.2.4 (Debian 12's 1.2.3, Alpine up to 3.17): a candidate that res_mkquery
    /// cannot encode ends the walk with EAI_NONAME instead of moving on (commit 1e7fb12f).
    MuslPre124,
    /// Go 1.20+'s pure resolver (src/net/dnsclient_unix.go).
    Go,
    /// Go 1.19's pure resolver (Debian 12's golang-go 1.19.8): dnsConfig.nameList returns no
    /// name at all for a name under `.onion` (avoidDNS of the whole name) or a rooted name of
    /// 254 characters (`l == 254 && rooted`); 1.20 and later check
    /// each candidate instead.
    Go119,
    /// c-ares 1.34 `ares_getaddrinfo` (src/lib/ares_search.c, ares_addrinfo*.c).
    CAres,
    /// c-ares before 1.34 as Debian 12 ships it (1.18.1; ares_getaddrinfo.c next_dns_lookup,
    /// host_callback): SERVFAIL and REFUSED always stop, a candidate it cannot encode ends the
    /// lookup, and resolv.conf is read differently (see `resolv_conf`).
    CAres118,
    /// hickory-resolver 0.26 `Resolver::lookup_ip` (src/resolver.rs build_names,
    /// src/lookup_ip.rs), the resolver of Rust services, configured from /etc/resolv.conf.
    Hickory,
}

impl Stub {
    pub fn as_str(self) -> &'static str {
        match self {
            Stub::Glibc => "glibc",
            Stub::Musl => "musl",
            Stub::MuslPre124 => "musl-1.2.3",
            Stub::Go => "go",
            Stub::Go119 => "go-1.19",
            Stub::CAres => "c-ares",
            Stub::CAres118 => "c-ares-1.18",
            Stub::Hickory => "hickory",
        }
    }
}

impl Stub {
    /// Either musl model.
    pub fn is_musl(self) -> bool {
        matches!(self, Stub::Musl | Stub::MuslPre124)
    }

    /// Either Go model.
    pub fn is_go(self) -> bool {
        matches!(self, Stub::Go | Stub::Go119)
    }

    /// Either c-ares model.
    pub fn is_cares(self) -> bool {
        matches!(self, Stub::CAres | Stub::CAres118)
    }
}

impl fmt::Display for Stub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stub {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "glibc" => Ok(Stub::Glibc),
            "musl" => Ok(Stub::Musl),
            "musl-1.2.3" | "musl-1.2.2" | "musl-1.2.1" | "musl-1.2.0" => Ok(Stub::MuslPre124),
            "go" => Ok(Stub::Go),
            "go-1.19" | "go1.19" => Ok(Stub::Go119),
            "c-ares" | "cares" | "ares" => Ok(Stub::CAres),
            "c-ares-1.18" => Ok(Stub::CAres118),
            "hickory" | "hickory-resolver" => Ok(Stub::Hickory),
            _ => Err(format!(
                "unknown stub {s:?}: expected glibc, musl, musl-1.2.3, go, go-1.19, c-ares, c-ares-1.18 or hickory"
            )),
        }
    }
}

/// Address family asked by the application (`getaddrinfo` hints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// AF_INET: A only.
    Inet,
    /// AF_INET6: AAAA only.
    Inet6,
    /// AF_UNSPEC: A and AAAA.
    Unspec,
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "inet" | "ipv4" | "4" => Ok(Family::Inet),
            "inet6" | "ipv6" | "6" => Ok(Family::Inet6),
            "unspec" | "any" => Ok(Family::Unspec),
            _ => Err(format!(
                "unknown family {s:?}: expected inet, inet6 or unspec"
            )),
        }
    }
}

/// How the server (as seen by the stub) answered one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// NOERROR with records of the asked type.
    Address,
    /// NOERROR without records of the asked type (RFC 2308 §2.2).
    NoData,
    NxDomain,
    ServFail,
    Refused,
    /// No reply within the stub's timeout.
    Timeout,
}

impl Answer {
    /// Name used by `ndots simulate` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Address => "NOERROR",
            Answer::NoData => "NODATA",
            Answer::NxDomain => "NXDOMAIN",
            Answer::ServFail => "SERVFAIL",
            Answer::Refused => "REFUSED",
            Answer::Timeout => "TIMEOUT",
        }
    }

    /// SERVFAIL, REFUSED or no reply: the server did not say anything about the name.
    fn is_failure(self) -> bool {
        matches!(self, Answer::ServFail | Answer::Refused | Answer::Timeout)
    }
}

/// One query of a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Lowercase, absolute.
    pub qname: String,
    pub qtype: u16,
    pub answer: Answer,
}

/// The queries of one lookup and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Walk {
    /// In the order the stub sends them; the two queries of an A/AAAA pair are sent at once.
    pub queries: Vec<Query>,
    /// The candidate whose answer gave addresses, if any.
    pub result: Option<String>,
}

/// What the stub does after a candidate's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Addresses: the lookup is done.
    Success,
    /// Go on with the next candidate.
    Next,
    /// Stop the search list; glibc still tries the as-is name if it has not yet.
    Stop,
}

/// Where a candidate comes from in glibc's `__res_context_search`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    AsIsFirst,
    Search,
    AsIsLast,
}

impl Stub {
    /// The candidate names this stub sends for `name`, in order, if every one is NXDOMAIN.
    /// Names that the stub refuses to look up at all give an empty list.
    pub fn candidates(self, name: &str, settings: &ResolverSettings) -> Vec<String> {
        self.candidate_plan(name, settings)
            .into_iter()
            .filter_map(|(n, _)| n)
            .collect()
    }

    /// Candidates with their role; `None` stands for a candidate that cannot be encoded (the
    /// libc fails in res_mkquery without sending anything).
    fn candidate_plan(self, name: &str, s: &ResolverSettings) -> Vec<(Option<String>, Role)> {
        let lower = name.to_ascii_lowercase();
        let dots = lower.matches('.').count() as u32;
        let rooted = lower.ends_with('.');
        let bare = lower.trim_end_matches('.');
        // An empty label ("a..b", "a..") cannot be encoded: no stub sends anything for it
        // (glibc res_hnok, Go isDomainName, musl res_mkquery on every candidate).
        if bare.is_empty() || lower.contains("..") {
            return Vec::new();
        }
        let as_is = format!("{bare}.");
        let with = |suffix: &str| -> String {
            if suffix.is_empty() {
                as_is.clone()
            } else {
                format!("{bare}.{suffix}.")
            }
        };
        let enc = |n: String| encodable(&n).then_some(n);
        let mut out = Vec::new();
        match self {
            Stub::Hickory => {
                // Name::from_utf8: a name that does not parse fails before any query.
                if !encodable(&as_is) {
                    return out;
                }
                // CachingClient (RFC 6761, RFC 7686): localhost names are answered with the
                // loopback address, *.invalid and *.onion get NXDOMAIN, all without a query.
                let special = |n: &str| {
                    let n = n.trim_end_matches('.');
                    ["localhost", "invalid", "onion"]
                        .iter()
                        .any(|z| in_zone(n, z))
                };
                if in_zone(bare, "localhost") {
                    return out;
                }
                // build_names: an FQDN, or a v3 onion address (a 56-character label under
                // onion.), is the only name.
                let labels: Vec<&str> = bare.split('.').collect();
                let onion_v3 = labels.len() >= 2
                    && labels[labels.len() - 1] == "onion"
                    && labels[labels.len() - 2].len() == 56;
                if rooted || onion_v3 {
                    if !special(&as_is) {
                        out.push((Some(as_is), Role::AsIsFirst));
                    }
                    return out;
                }
                // `num_labels > ndots`: the same as dots >= ndots.
                let raw_first = dots >= s.ndots;
                if raw_first {
                    out.push((Some(as_is.clone()), Role::AsIsFirst));
                }
                // The list is built as a stack (reversed) and a candidate already on it is not
                // pushed again: a repeated search entry keeps its last place, and the system
                // domain (first in `s.search`, see resolv_conf) counts only if the list lacks it.
                let mut stack: Vec<String> = vec![as_is.clone()];
                for d in s.search.iter().rev() {
                    let c = with(d);
                    if !stack.contains(&c) {
                        stack.push(c);
                    }
                }
                for c in stack.into_iter().skip(1).rev() {
                    if !special(&c) {
                        // append_domain fails on a name over 255 bytes: skipped.
                        out.push((enc(c), Role::Search));
                    }
                }
                if !raw_first && !special(&as_is) {
                    out.push((Some(as_is), Role::AsIsLast));
                }
            }
            Stub::Glibc => {
                // dns-host.c check_name / res_hnok: a name with other bytes than letters,
                // digits, '-', '_' (or a label starting with '-') is not looked up.
                if !bare.split('.').all(|l| {
                    !l.starts_with('-')
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }) {
                    return out;
                }
                // res_query.c __res_context_search.
                if rooted {
                    out.push((enc(as_is), Role::AsIsFirst));
                    return out;
                }
                let mut tried_as_is = false;
                if dots >= s.ndots {
                    out.push((enc(as_is.clone()), Role::AsIsFirst));
                    tried_as_is = true;
                }
                let mut root_on_list = false;
                let searched = !s.search.is_empty();
                for d in &s.search {
                    if d.is_empty() {
                        root_on_list = true;
                    }
                    out.push((enc(with(d)), Role::Search));
                }
                // no-tld-query skips the final as-is only for a dotless name after a search.
                let tld_ok = dots > 0 || !searched || !s.no_tld_query;
                if tld_ok && !(tried_as_is || root_on_list) {
                    out.push((enc(as_is), Role::AsIsLast));
                }
            }
            Stub::Musl | Stub::MuslPre124 => {
                // lookup_name.c __lookup_name: only the length is checked (1..=254); unlike
                // glibc any byte may go out, '_' included (is_valid_hostname applies to names
                // read from /etc/hosts and CNAME targets only).
                if lower.len() > 254 {
                    return out;
                }
                // name_from_dns_search: a trailing dot or dots >= ndots: as-is only, never a
                // search fallback.
                if !(rooted || dots >= s.ndots) {
                    for d in &s.search {
                        // `z-p < 256 - l - 1`: a candidate over 255 characters is skipped.
                        if bare.len() + 1 + d.len() >= 256 {
                            continue;
                        }
                        // A root entry gives "name.." which res_mkquery refuses, like any name
                        // it cannot encode: the candidate returns 0 and the search moves on.
                        let c = if d.is_empty() { None } else { enc(with(d)) };
                        out.push((c, Role::Search));
                    }
                }
                out.push((enc(as_is), Role::AsIsLast));
            }
            Stub::Go | Stub::Go119 | Stub::CAres | Stub::CAres118 => {
                // dnsclient_unix.go nameList / ares_search.c ares_search_name_list.
                let onion = |n: &str| n.trim_end_matches('.').ends_with(".onion") || n == "onion.";
                // isDomainName (goLookupIPCNAMEOrder): over 254, or 254 without the root dot.
                if self.is_go() && (lower.len() > 254 || (lower.len() == 254 && !rooted)) {
                    return out;
                }
                // Go 1.19 nameList: `avoidDNS(name)` and `l == 254 && rooted` return nil.
                if self == Stub::Go119
                    && (lower.len() == 254 || lower.trim_end_matches('.').ends_with(".onion"))
                {
                    return out;
                }
                if self.is_cares() && (bare == "localhost" || bare.ends_with(".localhost")) {
                    return out; // ares_is_localhost (RFC 6761): never sent to DNS.
                }
                if self.is_cares() && onion(&as_is) {
                    // ares_getaddrinfo: a .onion name fails with ENOTFOUND before any search
                    // (RFC 7686).
                    return out;
                }
                if rooted {
                    if !onion(&as_is) {
                        out.push((enc(as_is), Role::AsIsFirst));
                    }
                    return out;
                }
                let has_ndots = dots >= s.ndots;
                if has_ndots && !onion(&as_is) {
                    out.push((enc(as_is.clone()), Role::AsIsFirst));
                }
                for d in &s.search {
                    if self.is_go() && d.is_empty() {
                        continue;
                    }
                    // c-ares before 1.34 appends a root entry as "name.." (ares__cat_domain),
                    // which ares_create_query refuses (ARES_EBADNAME; verified with 1.18.1).
                    if self == Stub::CAres118 && d.is_empty() {
                        out.push((None, Role::Search));
                        continue;
                    }
                    let c = with(d);
                    if onion(&c) || (self.is_go() && c.len() > 254) {
                        continue;
                    }
                    out.push((enc(c), Role::Search));
                }
                if !has_ndots && !onion(&as_is) {
                    out.push((enc(as_is), Role::AsIsLast));
                }
            }
        }
        out
    }

    /// The query types sent per candidate, in send order.
    fn qtypes(self, family: Family, s: &ResolverSettings) -> &'static [u16] {
        match family {
            Family::Inet => &[QTYPE_A],
            // glibc no-aaaa (2.36+): AF_INET6 lookups get NO_DATA without a query.
            Family::Inet6 if self == Stub::Glibc && s.no_aaaa => &[],
            Family::Inet6 => &[QTYPE_AAAA],
            Family::Unspec if self == Stub::Glibc && s.no_aaaa => &[QTYPE_A],
            Family::Unspec => &[QTYPE_A, QTYPE_AAAA],
        }
    }

    /// What the stub does after a candidate got `answers` (one per qtype, in send order).
    fn step(self, answers: &[Answer], role: Role, candidate: &str) -> Step {
        if answers.contains(&Answer::Address)
            && matches!(
                self,
                Stub::Go | Stub::Go119 | Stub::CAres | Stub::CAres118 | Stub::Hickory
            )
        {
            // Go: len(addrs) > 0 breaks the loop; c-ares: either family's addresses succeed.
            return Step::Success;
        }
        match self {
            Stub::Glibc => {
                let step = if answers.len() == 2 && answers[0] == Answer::Timeout {
                    // No A reply: send_dg retries in single-request mode, where the AAAA query
                    // waits for the A reply, so the pair ends as a timeout and an AAAA answer
                    // is lost (verified: A timeout + AAAA address, then "web." only).
                    Step::Stop
                } else if answers.contains(&Answer::Address) {
                    // One family with answers is success (res_query.c `goto success`).
                    Step::Success
                } else if answers.iter().any(|a| !a.is_failure()) {
                    // A failed query of a pair leaves the other reply to decide (send_dg returns
                    // the reply it has; res_query.c then reads the other buffer). NXDOMAIN
                    // (HOST_NOT_FOUND) and NODATA (NO_DATA) keep the search going.
                    Step::Next
                } else if answers[0] == Answer::ServFail {
                    // Every query failed: the A reply's rcode decides. SERVFAIL goes on
                    // (`hp->rcode == SERVFAIL`), REFUSED and timeouts end the search (`done++`).
                    Step::Next
                } else {
                    Step::Stop
                };
                // The first as-is try (dots >= ndots) falls through to the search list on any
                // failure (res_query.c: only `ret > 0` returns).
                if role == Role::AsIsFirst && step == Step::Stop {
                    Step::Next
                } else {
                    step
                }
            }
            Stub::Musl | Stub::MuslPre124 => {
                // name_from_dns: the replies are checked in send order (A first); a failure
                // (short reply, SERVFAIL; REFUSED is ignored by res_msend until the timeout)
                // gives EAI_AGAIN, NXDOMAIN returns 0 (next candidate), NOERROR looks at the
                // next reply; then addresses or EAI_NODATA.
                for a in answers {
                    match a {
                        Answer::ServFail | Answer::Refused | Answer::Timeout => return Step::Stop,
                        Answer::NxDomain => return Step::Next,
                        Answer::Address | Answer::NoData => {}
                    }
                }
                if answers.contains(&Answer::Address) {
                    Step::Success
                } else {
                    Step::Stop
                }
            }
            // goLookupIPCNAME: every error moves on to the next name. hickory LookupIpFuture:
            // an error or an empty answer retries with the next name.
            Stub::Go | Stub::Go119 | Stub::Hickory => Step::Next,
            Stub::CAres | Stub::CAres118 => {
                // host_callback: without addresses the query that finished last decides. A
                // query without a reply finishes last (at its timeout); replies come back in
                // the order sent (verified with 1.18.1: A timeout + AAAA NXDOMAIN stops).
                let last = if answers.contains(&Answer::Timeout) {
                    Some(&Answer::Timeout)
                } else {
                    answers.last()
                };
                // search_callback: ENOTFOUND/ENODATA continue; ESERVFAIL/EREFUSED only after a
                // single-label candidate (1.34.0, #852); before 1.34 they always stop.
                match last {
                    None | Some(Answer::NxDomain) | Some(Answer::NoData) => Step::Next,
                    Some(Answer::ServFail) | Some(Answer::Refused)
                        if self == Stub::CAres
                            && !candidate.trim_end_matches('.').contains('.') =>
                    {
                        Step::Next
                    }
                    _ => Step::Stop,
                }
            }
        }
    }

    /// Run one lookup of `name` for `family`, asking `oracle` how each query is answered: a
    /// thin loop over [`Walker`], which live replay drives asynchronously.
    pub fn walk(
        self,
        name: &str,
        family: Family,
        settings: &ResolverSettings,
        mut oracle: impl FnMut(&str, u16) -> Answer,
    ) -> Walk {
        let mut w = Walker::new(self, name, family, settings);
        let mut answers = Vec::with_capacity(2);
        while let Some((qname, qtypes)) = w.next_queries() {
            answers.clear();
            answers.extend(qtypes.iter().map(|&t| oracle(qname, t)));
            w.answer(&answers);
        }
        w.finish()
    }
}

/// One lookup as a state machine: [`Walker::next_queries`] says what the stub sends now (one
/// candidate, its query types sent at once), [`Walker::answer`] takes their answers and moves
/// on. The sync [`Stub::walk`] and live replay (many lookups in flight, answers arriving from
/// the network) share it, so both follow exactly the same rules.
#[derive(Clone, Debug)]
pub struct Walker {
    stub: Stub,
    plan: Vec<(Option<String>, Role)>,
    /// The current candidate in `plan`; `plan.len()` when done.
    pos: usize,
    qtypes: &'static [u16],
    /// glibc single-request(-reopen): AAAA only after the A reply (res_send.c send_dg).
    sequential: bool,
    stopped: bool,
    /// Answers of the current candidate so far, in `qtypes` order.
    answers: Vec<Answer>,
    walk: Walk,
    record: bool,
    tally: WalkTally,
}

/// What a walk sent, counted as it goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkTally {
    pub queries: u32,
    pub nxdomain: u32,
    /// The last answer to a query of the first query type (A of a pair).
    pub last: Option<Answer>,
    /// Some query of the first query type (A of a pair) was answered NODATA: a name tried
    /// exists, without records of that type.
    pub nodata: bool,
    /// Some query of the first query type was answered SERVFAIL.
    pub servfail: bool,
    /// Both query types of an A/AAAA pair went out.
    pub both_types: bool,
}

impl Walker {
    pub fn new(stub: Stub, name: &str, family: Family, settings: &ResolverSettings) -> Walker {
        let mut w = Walker {
            stub,
            plan: stub.candidate_plan(name, settings),
            pos: 0,
            qtypes: stub.qtypes(family, settings),
            sequential: stub == Stub::Glibc
                && (settings.single_request || settings.single_request_reopen),
            stopped: false,
            answers: Vec::with_capacity(2),
            walk: Walk::default(),
            record: true,
            tally: WalkTally::default(),
        };
        w.settle();
        w
    }

    /// The candidate to send now and the query types to send for it at once; `None` when the
    /// lookup is over.
    pub fn next_queries(&self) -> Option<(&str, &'static [u16])> {
        let name = self.plan.get(self.pos)?.0.as_deref()?;
        let rest = &self.qtypes[self.answers.len()..];
        let now = if self.sequential { &rest[..1] } else { rest };
        Some((name, now))
    }

    /// The answers to the queries [`Walker::next_queries`] gave, in its order (fewer is fine:
    /// the rest stay outstanding).
    pub fn answer(&mut self, answers: &[Answer]) {
        let Some((Some(_), role)) = self.plan.get(self.pos) else {
            return;
        };
        let role = *role;
        for &a in answers {
            let Some(&t) = self.qtypes.get(self.answers.len()) else {
                break;
            };
            self.answers.push(a);
            self.tally.queries += 1;
            self.tally.nxdomain += (a == Answer::NxDomain) as u32;
            if t == self.qtypes[0] {
                // The first type's answers only: the tracker names each type's walk apart,
                // and replay reads the first type's (A's) lookup for a pair.
                self.tally.last = Some(a);
                self.tally.nodata |= a == Answer::NoData;
                self.tally.servfail |= a == Answer::ServFail;
            } else {
                self.tally.both_types = true;
            }
            if self.record {
                let qname = self.plan[self.pos].0.clone().unwrap_or_default();
                self.walk.queries.push(Query {
                    qname,
                    qtype: t,
                    answer: a,
                });
            }
        }
        // glibc single-request(-reopen): an A timeout means AAAA is never sent.
        let a_timed_out = self.sequential && self.answers.first() == Some(&Answer::Timeout);
        if self.answers.len() < self.qtypes.len() && !a_timed_out {
            return;
        }
        let qname = self.plan[self.pos].0.as_deref().unwrap_or_default();
        match self.stub.step(&self.answers, role, qname) {
            Step::Success => {
                self.walk.result = self.plan[self.pos].0.clone();
                self.pos = self.plan.len();
                return;
            }
            Step::Next => {}
            Step::Stop => {
                if self.stub == Stub::Glibc && role == Role::AsIsLast {
                    self.pos = self.plan.len();
                    return;
                }
                self.stopped = true;
            }
        }
        self.answers.clear();
        self.pos += 1;
        self.settle();
    }

    /// Do not keep each query in [`Walk::queries`] (live replay, where only the counts
    /// matter: no allocation per query).
    pub fn without_query_log(mut self) -> Walker {
        self.record = false;
        self
    }

    /// Counts of the queries answered so far.
    pub fn tally(&self) -> WalkTally {
        self.tally
    }

    /// Whether the lookup is over.
    pub fn is_done(&self) -> bool {
        self.pos >= self.plan.len()
    }

    /// The queries sent and how the lookup ended.
    pub fn finish(self) -> Walk {
        self.walk
    }

    /// Move `pos` to the next candidate the stub actually sends (or past the end).
    fn settle(&mut self) {
        while let Some((candidate, role)) = self.plan.get(self.pos) {
            // After a stop, glibc still sends the as-is name if it is still due; nothing else.
            if self.stopped && !(self.stub == Stub::Glibc && *role == Role::AsIsLast) {
                self.pos += 1;
                continue;
            }
            if candidate.is_none() {
                match self.stub {
                    // glibc: res_mkquery fails -> NO_RECOVERY -> the search stops.
                    Stub::Glibc if *role == Role::Search => self.stopped = true,
                    // musl < 1.2.4 returns EAI_NONAME from name_from_dns; c-ares gets
                    // ARES_EBADNAME for the query and ends the lookup (verified with 1.18.1
                    // and 1.34.9): the walk ends.
                    Stub::MuslPre124 | Stub::CAres | Stub::CAres118 => {
                        self.pos = self.plan.len();
                        return;
                    }
                    // musl 1.2.4+ returns 0 and moves on; Go and hickory fail this name and
                    // move on.
                    _ => {}
                }
                self.pos += 1;
                continue;
            }
            if self.qtypes.is_empty() {
                self.pos = self.plan.len();
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::resolv_conf::Environment;
    use std::collections::HashMap;

    fn settings(stub: Stub, ndots: u32, search: &str) -> ResolverSettings {
        let mut s = ResolverSettings::defaults(stub);
        s.set_ndots(ndots, stub);
        s.set_search(search);
        s
    }

    const K8S: &str = "default.svc.cluster.local svc.cluster.local cluster.local ec2.internal";

    /// A table of answers; everything else is NXDOMAIN.
    fn oracle<'a>(
        table: &'a [(&'a str, Option<u16>, Answer)],
    ) -> impl FnMut(&str, u16) -> Answer + 'a {
        move |q, t| {
            table
                .iter()
                .find(|(n, ty, _)| *n == q && ty.is_none_or(|ty| ty == t))
                .map(|(_, _, a)| *a)
                .unwrap_or(Answer::NxDomain)
        }
    }

    fn names(w: &Walk) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for q in &w.queries {
            if v.last() != Some(&q.qname) {
                v.push(q.qname.clone());
            }
        }
        v
    }

    #[test]
    fn order_below_ndots_is_search_then_as_is() {
        for stub in [Stub::Glibc, Stub::Musl, Stub::Go, Stub::CAres] {
            let c = stub.candidates("api.github.com", &settings(stub, 5, K8S));
            assert_eq!(c.len(), 5, "{stub}");
            assert_eq!(c[0], "api.github.com.default.svc.cluster.local.");
            assert_eq!(c[3], "api.github.com.ec2.internal.");
            assert_eq!(c[4], "api.github.com.");
        }
    }

    #[test]
    fn order_at_or_above_ndots() {
        let s = |st| settings(st, 2, K8S);
        assert_eq!(
            Stub::Glibc.candidates("a.b.c", &s(Stub::Glibc))[0],
            "a.b.c."
        );
        assert_eq!(Stub::Glibc.candidates("a.b.c", &s(Stub::Glibc)).len(), 5);
        assert_eq!(Stub::Go.candidates("a.b.c", &s(Stub::Go)).len(), 5);
        assert_eq!(Stub::Musl.candidates("a.b.c", &s(Stub::Musl)), ["a.b.c."]);
        for stub in [Stub::Glibc, Stub::Musl, Stub::Go, Stub::CAres] {
            assert_eq!(stub.candidates("a.b.", &s(stub)), ["a.b."], "{stub}");
        }
    }

    #[test]
    fn ndots_zero() {
        assert_eq!(
            Stub::Musl.candidates("foo", &settings(Stub::Musl, 0, "a.b")),
            ["foo."]
        );
        assert_eq!(
            Stub::Go.candidates("foo", &settings(Stub::Go, 0, "a.b")),
            ["foo.", "foo.a.b."]
        );
    }

    #[test]
    fn nxdomain_continues_everywhere() {
        for stub in [Stub::Glibc, Stub::Musl, Stub::Go, Stub::CAres] {
            let s = settings(stub, 5, K8S);
            let w = stub.walk(
                "api.github.com",
                Family::Unspec,
                &s,
                oracle(&[("api.github.com.", None, Answer::Address)]),
            );
            assert_eq!(w.queries.len(), 10, "{stub}");
            assert_eq!(w.result.as_deref(), Some("api.github.com."));
        }
    }

    #[test]
    fn nodata_continues_in_glibc_and_go_stops_in_musl() {
        let t = [
            ("foo.default.svc.cluster.local.", None, Answer::NoData),
            ("foo.", None, Answer::Address),
        ];
        for (stub, n, res) in [
            (Stub::Glibc, 5, true),
            (Stub::Go, 5, true),
            (Stub::CAres, 5, true),
            (Stub::Musl, 1, false),
        ] {
            let w = stub.walk("foo", Family::Unspec, &settings(stub, 5, K8S), oracle(&t));
            assert_eq!(names(&w).len(), n, "{stub}");
            assert_eq!(w.result.is_some(), res, "{stub}");
        }
    }

    #[test]
    fn servfail_refused_timeout() {
        let first = "foo.default.svc.cluster.local.";
        for (a, glibc, musl, go, cares) in [
            (Answer::ServFail, 5, 1, 5, 1),
            (Answer::Refused, 2, 1, 5, 1),
            (Answer::Timeout, 2, 1, 5, 1),
        ] {
            let t = [(first, None, a)];
            for (stub, n) in [
                (Stub::Glibc, glibc),
                (Stub::Musl, musl),
                (Stub::Go, go),
                (Stub::CAres, cares),
            ] {
                let w = stub.walk("foo", Family::Unspec, &settings(stub, 5, K8S), oracle(&t));
                assert_eq!(names(&w).len(), n, "{stub} {a:?}: {:?}", names(&w));
            }
        }
        // glibc: after REFUSED the as-is name is still tried, and only it.
        let w = Stub::Glibc.walk(
            "foo",
            Family::Unspec,
            &settings(Stub::Glibc, 5, K8S),
            oracle(&[(first, None, Answer::Refused)]),
        );
        assert_eq!(names(&w), [first, "foo."]);
    }

    #[test]
    fn one_family_answer() {
        // A ok + AAAA NXDOMAIN: success for glibc/Go/c-ares, NXDOMAIN for musl.
        let t = [(
            "foo.default.svc.cluster.local.",
            Some(QTYPE_A),
            Answer::Address,
        )];
        for stub in [Stub::Glibc, Stub::Go, Stub::CAres] {
            let w = stub.walk("foo", Family::Unspec, &settings(stub, 5, K8S), oracle(&t));
            assert_eq!(
                w.result.as_deref(),
                Some("foo.default.svc.cluster.local."),
                "{stub}"
            );
            assert_eq!(w.queries.len(), 2);
        }
        let w = Stub::Musl.walk(
            "foo",
            Family::Unspec,
            &settings(Stub::Musl, 5, K8S),
            oracle(&t),
        );
        assert_eq!(w.result, None);
        assert_eq!(w.queries.len(), 10);
    }

    #[test]
    fn single_family_walks_send_one_type() {
        let w = Stub::Glibc.walk(
            "foo",
            Family::Inet,
            &settings(Stub::Glibc, 5, K8S),
            oracle(&[]),
        );
        assert_eq!(w.queries.len(), 5);
        assert!(w.queries.iter().all(|q| q.qtype == QTYPE_A));
        let w = Stub::Musl.walk(
            "foo",
            Family::Inet6,
            &settings(Stub::Musl, 5, K8S),
            oracle(&[]),
        );
        assert!(w.queries.iter().all(|q| q.qtype == QTYPE_AAAA));
    }

    #[test]
    fn glibc_as_is_first_failure_falls_to_search() {
        let s = settings(Stub::Glibc, 1, "a.example");
        let w = Stub::Glibc.walk(
            "x.y",
            Family::Inet,
            &s,
            oracle(&[("x.y.", None, Answer::Timeout)]),
        );
        assert_eq!(names(&w), ["x.y.", "x.y.a.example."]);
    }

    #[test]
    fn glibc_no_tld_query_and_root_on_list() {
        let mut s = settings(Stub::Glibc, 5, "a.example b.example");
        s.no_tld_query = true;
        assert_eq!(
            Stub::Glibc.candidates("foo", &s),
            ["foo.a.example.", "foo.b.example."]
        );
        assert_eq!(
            Stub::Glibc.candidates("foo.bar", &s).last().unwrap(),
            "foo.bar."
        );
        let s = settings(Stub::Glibc, 5, "a.example .");
        assert_eq!(
            Stub::Glibc.candidates("foo", &s),
            ["foo.a.example.", "foo."]
        );
    }

    #[test]
    fn too_long_candidates() {
        let name = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63)); // 191
        let s = |st| {
            settings(
                st,
                5,
                "default.svc.cluster.local.this-is-a-long-node-domain.example.internal x.y",
            )
        };
        // glibc: the unencodable candidate stops the search; only the as-is name follows.
        let w = Stub::Glibc.walk(&name, Family::Inet, &s(Stub::Glibc), oracle(&[]));
        assert_eq!(names(&w), [format!("{name}.")]);
        // musl skips it and goes on.
        let w = Stub::Musl.walk(&name, Family::Inet, &s(Stub::Musl), oracle(&[]));
        assert_eq!(names(&w), [format!("{name}.x.y."), format!("{name}.")]);
    }

    #[test]
    fn name_filters() {
        for stub in [Stub::Glibc, Stub::Musl, Stub::Go, Stub::CAres] {
            assert!(
                stub.candidates("a..b", &settings(stub, 5, K8S)).is_empty(),
                "{stub}"
            );
            assert!(
                stub.candidates("", &settings(stub, 5, K8S)).is_empty(),
                "{stub}"
            );
        }
        let s = settings(Stub::Glibc, 5, K8S);
        assert!(Stub::Glibc.candidates("bad name", &s).is_empty());
        assert!(!Stub::Glibc.candidates("_http._tcp.web", &s).is_empty());
        assert_eq!(
            Stub::Musl
                .candidates("_http._tcp.web", &settings(Stub::Musl, 5, K8S))
                .len(),
            5
        );
        // Go avoidDNS: the .onion name itself is never sent; its expansions are.
        let c = Stub::Go.candidates("x.onion", &settings(Stub::Go, 5, K8S));
        assert_eq!(c.len(), 4);
        assert!(!c.contains(&"x.onion.".to_string()));
        assert!(Stub::CAres
            .candidates("localhost", &settings(Stub::CAres, 5, K8S))
            .is_empty());
    }

    #[test]
    fn go_1_19_sends_nothing_for_onion_names_and_rooted_names_of_254_characters() {
        // Go 1.19.8 (tests/real_clients.rs: onion-name, rooted-name-of-254-characters):
        // nameList returns nil for both; later Go checks each candidate.
        let s = settings(Stub::Go119, 5, K8S);
        assert!(Stub::Go119.candidates("x.onion", &s).is_empty());
        assert!(Stub::Go119.candidates("x.ONION.", &s).is_empty());
        let l63 = "a".repeat(63);
        let rooted = format!("{l63}.{l63}.{l63}.{}.", "d".repeat(61));
        assert_eq!(rooted.len(), 254);
        assert!(Stub::Go119.candidates(&rooted, &s).is_empty());
        assert_eq!(Stub::Go.candidates(&rooted, &s), vec![rooted.clone()]);
        // Everything else walks as the later Go does.
        for name in ["web", "api.github.com", "a.b.c.d.e", "web."] {
            assert_eq!(
                Stub::Go119.candidates(name, &s),
                Stub::Go.candidates(name, &settings(Stub::Go, 5, K8S)),
                "{name}"
            );
        }
        assert_eq!("go-1.19".parse::<Stub>(), Ok(Stub::Go119));
        assert_eq!(Stub::Go119.as_str(), "go-1.19");
    }

    #[test]
    fn musl_pair_checks_a_first() {
        let q = "foo.default.svc.cluster.local.";
        let s = settings(Stub::Musl, 5, K8S);
        // A NXDOMAIN, AAAA SERVFAIL: the A reply is read first, so the search continues.
        let w = Stub::Musl.walk(
            "foo",
            Family::Unspec,
            &s,
            oracle(&[(q, Some(QTYPE_AAAA), Answer::ServFail)]),
        );
        assert_eq!(names(&w).len(), 5);
        // A SERVFAIL: stop.
        let w = Stub::Musl.walk(
            "foo",
            Family::Unspec,
            &s,
            oracle(&[(q, Some(QTYPE_A), Answer::ServFail)]),
        );
        assert_eq!(names(&w).len(), 1);
    }

    #[test]
    fn glibc_pair_failures_a_reply_decides() {
        let q = "foo.default.svc.cluster.local.";
        let s = settings(Stub::Glibc, 5, K8S);
        let run = |a: Answer, aaaa: Answer| {
            let t = [(q, Some(QTYPE_A), a), (q, Some(QTYPE_AAAA), aaaa)];
            names(&Stub::Glibc.walk("foo", Family::Unspec, &s, oracle(&t))).len()
        };
        // No A reply ends the search, even with an AAAA answer (then "foo." only).
        assert_eq!(run(Answer::Timeout, Answer::Address), 2);
        assert_eq!(run(Answer::Timeout, Answer::NxDomain), 2);
        // A usable reply of either type keeps the search going.
        assert_eq!(run(Answer::NxDomain, Answer::Timeout), 5);
        assert_eq!(run(Answer::Refused, Answer::NoData), 5);
        // Both failed: A's rcode decides.
        assert_eq!(run(Answer::ServFail, Answer::Refused), 5);
        assert_eq!(run(Answer::ServFail, Answer::Timeout), 5);
        assert_eq!(run(Answer::Refused, Answer::ServFail), 2);
        // An answer for one type is success.
        assert_eq!(run(Answer::Address, Answer::ServFail), 1);
    }

    #[test]
    fn glibc_single_request_skips_aaaa_after_an_a_timeout() {
        let q = "foo.default.svc.cluster.local.";
        let mut s = settings(Stub::Glibc, 5, K8S);
        s.single_request = true;
        let w = Stub::Glibc.walk(
            "foo",
            Family::Unspec,
            &s,
            oracle(&[(q, Some(QTYPE_A), Answer::Timeout)]),
        );
        assert_eq!(w.queries.iter().filter(|x| x.qname == q).count(), 1);
        assert_eq!(names(&w), [q, "foo."]);
    }

    #[test]
    fn glibc_no_aaaa_sends_a_only() {
        let s = ResolverSettings::from_resolv_conf(
            "search a.b\noptions ndots:5 no-aaaa\n",
            Stub::Glibc,
            &Environment::default(),
        );
        let w = Stub::Glibc.walk("foo", Family::Unspec, &s, oracle(&[]));
        assert!(w.queries.iter().all(|q| q.qtype == QTYPE_A));
        assert_eq!(w.queries.len(), 2);
    }

    #[test]
    fn musl_root_search_entry_is_skipped_without_a_query() {
        let w = Stub::Musl.walk(
            "foo",
            Family::Inet,
            &settings(Stub::Musl, 5, "a.b ."),
            oracle(&[]),
        );
        assert_eq!(names(&w), ["foo.a.b.", "foo."]);
        // Before 1.2.4 the unencodable "foo.." ends the walk (verified with Debian's 1.2.3).
        let w = Stub::MuslPre124.walk(
            "foo",
            Family::Inet,
            &settings(Stub::MuslPre124, 5, "a.b ."),
            oracle(&[]),
        );
        assert_eq!(names(&w), ["foo.a.b."]);
        assert_eq!(w.result, None);
    }

    #[test]
    fn cares_a_timeout_finishes_last_and_decides() {
        // Found with c-ares 1.18.1: A timeout + AAAA NXDOMAIN ends the lookup, because the
        // query without a reply is the one that finishes last.
        let q = "foo.default.svc.cluster.local.";
        for stub in [Stub::CAres, Stub::CAres118] {
            let s = settings(stub, 5, K8S);
            let w = stub.walk(
                "foo",
                Family::Unspec,
                &s,
                oracle(&[(q, Some(QTYPE_A), Answer::Timeout)]),
            );
            assert_eq!(names(&w), [q], "{stub}");
            // A SERVFAIL + AAAA NXDOMAIN: the AAAA reply comes last, the search goes on.
            let w = stub.walk(
                "foo",
                Family::Unspec,
                &s,
                oracle(&[(q, Some(QTYPE_A), Answer::ServFail)]),
            );
            assert_eq!(names(&w).len(), 5, "{stub}");
        }
    }

    #[test]
    fn cares_118_servfail_on_a_single_label_stops() {
        // 1.34 goes on after SERVFAIL/REFUSED for a single-label candidate (#852); 1.18 stops.
        let t = [("foo.", None, Answer::ServFail)];
        let w = Stub::CAres.walk(
            "foo",
            Family::Inet,
            &settings(Stub::CAres, 0, "a.b"),
            oracle(&t),
        );
        assert_eq!(names(&w), ["foo.", "foo.a.b."]);
        let w = Stub::CAres118.walk(
            "foo",
            Family::Inet,
            &settings(Stub::CAres118, 0, "a.b"),
            oracle(&t),
        );
        assert_eq!(names(&w), ["foo."]);
    }

    #[test]
    fn cares_118_unencodable_candidate_ends_the_lookup() {
        // Verified with 1.18.1: "name.." for a root entry and a candidate over 255 bytes get
        // ARES_EBADNAME, and nothing more is sent (1.34.9 too for the long candidate).
        let w = Stub::CAres118.walk(
            "web",
            Family::Inet,
            &settings(Stub::CAres118, 5, "a.example ."),
            oracle(&[]),
        );
        assert_eq!(names(&w), ["web.a.example."]);
        let long = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
        let w = Stub::CAres118.walk(
            &long,
            Family::Inet,
            &settings(Stub::CAres118, 5, &format!("{} x.example", "d".repeat(63))),
            oracle(&[]),
        );
        assert!(w.queries.is_empty());
        let w = Stub::CAres.walk(
            &long,
            Family::Inet,
            &settings(Stub::CAres, 5, &format!("{} x.example", "d".repeat(63))),
            oracle(&[]),
        );
        assert!(w.queries.is_empty());
    }

    #[test]
    fn cares_onion_names_are_never_searched() {
        for stub in [Stub::CAres, Stub::CAres118] {
            assert!(stub
                .candidates("x.onion", &settings(stub, 5, K8S))
                .is_empty());
        }
        assert_eq!("c-ares-1.18".parse::<Stub>(), Ok(Stub::CAres118));
        assert_eq!(Stub::CAres118.to_string(), "c-ares-1.18");
    }

    #[test]
    fn hickory_tries_the_system_domain_first_and_every_failure_goes_on() {
        let s = ResolverSettings::from_resolv_conf(
            "search a.example b.example a.example\noptions ndots:2\n",
            Stub::Hickory,
            &Environment {
                hostname: Some("node1.corp.example"),
                ..Default::default()
            },
        );
        // build_names: domain, then the list with a repeat at its last place, then as-is.
        assert_eq!(
            Stub::Hickory.candidates("web", &s),
            [
                "web.corp.example.",
                "web.b.example.",
                "web.a.example.",
                "web."
            ]
        );
        assert_eq!(Stub::Hickory.candidates("x.y.z", &s)[0], "x.y.z.");
        // Like Go: SERVFAIL, REFUSED and timeouts move on.
        for a in [Answer::ServFail, Answer::Refused, Answer::Timeout] {
            let w = Stub::Hickory.walk(
                "web",
                Family::Unspec,
                &s,
                oracle(&[
                    ("web.corp.example.", None, a),
                    ("web.", None, Answer::Address),
                ]),
            );
            assert_eq!(names(&w).len(), 4, "{a:?}");
            assert_eq!(w.result.as_deref(), Some("web."));
        }
    }

    #[test]
    fn hickory_special_use_names_are_never_sent() {
        let s = settings(Stub::Hickory, 5, "invalid svc.cluster.local");
        assert_eq!(
            Stub::Hickory.candidates("web", &s),
            ["web.svc.cluster.local.", "web."]
        );
        assert!(Stub::Hickory.candidates("x.localhost", &s).is_empty());
        assert!(Stub::Hickory.candidates("x.onion.", &s).is_empty());
        let v3 = format!("{}.onion", "a".repeat(56));
        assert!(Stub::Hickory.candidates(&v3, &s).is_empty());
        assert_eq!("hickory".parse::<Stub>(), Ok(Stub::Hickory));
    }

    #[test]
    fn answers_are_asked_once_per_query() {
        let mut asked: HashMap<(String, u16), u32> = HashMap::new();
        Stub::Glibc.walk(
            "foo",
            Family::Unspec,
            &settings(Stub::Glibc, 5, K8S),
            |q, t| {
                *asked.entry((q.to_string(), t)).or_default() += 1;
                Answer::NxDomain
            },
        );
        assert_eq!(asked.len(), 10);
        assert!(asked.values().all(|&n| n == 1));
    }
}
