//! The shortcut stage of the request path (DESIGN §3 "Shortcuts"): turns the search model's
//! decision into an answer, by mode.
//!
//! - `nxdomain`: NXDOMAIN synthesized here with an SOA, so clients and caches hold it for the
//!   configured negative TTL (RFC 2308 §3). No CNAME, so musl (which stops the walk on
//!   anything but NXDOMAIN) and Go behave exactly as with a real NXDOMAIN.
//! - `autopath`: the proxy walks the rest of the search path itself and answers
//!   `Q CNAME <first candidate that exists>` plus its records; existence is decided by the
//!   candidate's A and AAAA together, not by the query type, so the A and AAAA answers for one
//!   `Q` always agree on one target (CoreDNS autopath's known bug is that they did not). A type
//!   the target has no records of gets NODATA, so a client asking that type alone walks on.
//!
//! Neither mode answers a query with DO or CD set (`asks_for_dnssec`): what the proxy makes up
//! is unsigned.
//! - `shadow`: forward as usual and count where the shortcut would have disagreed.
//!
//! A name in a configured zone can still read as a valid Kubernetes name: the expansion
//! `api.github.com.svc.cluster.local` is pod `api` of service `github` in a namespace `com`.
//! The schema never lets us rule such a name out by shape, but RFC 8020 lets us rule it out by
//! its ancestors: when `com.svc.cluster.local` is NXDOMAIN, nothing underneath exists. Those
//! expansions get an ancestor check (through the cache, so one upstream query per namespace
//! per negative TTL serves every name under it) and NXDOMAIN when an ancestor is NXDOMAIN.

use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::cache::{Answer, Key, Lookup, OwnedKey, Served};
use crate::config::{ShortcutConfig, ShortcutMode};
use crate::search::decompose::SuffixKind;
use crate::search::shortcut::{Expansion, Reason, ShortcutPolicy};
use crate::wire::{self, QueryView};

use super::handler::Engine;

/// What to do with a query that missed the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Forward,
    /// Forward, and count a disagreement when upstream says the name exists.
    Shadow(Reason),
    /// Resolve these candidates in order; the first that exists is the CNAME target.
    Autopath {
        candidates: Vec<String>,
        reason: Reason,
        /// The zone whose SOA a synthesized NXDOMAIN carries (as in nxdomain mode).
        soa_zone: String,
    },
    /// RFC 8020: if any of these ancestors is NXDOMAIN the query is too; else forward.
    Ancestors(Vec<String>),
}

pub struct Shortcut {
    pub mode: ShortcutMode,
    policy: ShortcutPolicy,
    cluster_domain: String,
    /// `.svc.<cluster domain>`, for the ancestor check.
    svc_suffix: String,
    zones: Vec<String>,
    negative_ttl: u32,
}

/// The stage's verdict for one query.
pub enum Verdict {
    Plan(Plan),
    /// `out` holds a synthesized NXDOMAIN.
    Nxdomain(Reason),
}

impl Shortcut {
    pub fn new(
        cfg: &ShortcutConfig,
        cluster: &crate::config::ClusterConfig,
        negative_ttl: u32,
    ) -> Option<Shortcut> {
        if cfg.mode == ShortcutMode::Off {
            return None;
        }
        Some(Shortcut {
            mode: cfg.mode,
            policy: ShortcutPolicy::new(cluster, cfg),
            cluster_domain: cluster.domain.clone(),
            svc_suffix: format!(".svc.{}", cluster.domain),
            zones: cfg.zones.clone(),
            negative_ttl,
        })
    }

    pub fn policy(&self) -> &ShortcutPolicy {
        &self.policy
    }

    /// The verdict for a query that missed the cache; a synthesized NXDOMAIN is written to
    /// `out`.
    pub fn decide(&self, packet: &[u8], view: &QueryView, out: &mut Vec<u8>) -> Verdict {
        if asks_for_dnssec(view) {
            return Verdict::Plan(Plan::Forward);
        }
        let Ok(name) = wire::name_to_string(packet, view.question.name_start) else {
            return Verdict::Plan(Plan::Forward);
        };
        match self.judge(&name, view.question.qtype) {
            Judgement::Plan(plan) => Verdict::Plan(plan),
            Judgement::Nxdomain { reason, soa_zone } => {
                nxdomain_with_soa(packet, view, soa_zone, self.negative_ttl, out);
                Verdict::Nxdomain(reason)
            }
        }
    }

    /// The plan a miss for this query would follow, or `None` when the nxdomain shortcut would
    /// answer it. A prefetch refreshes an entry with the plan that filled it.
    pub fn plan(&self, packet: &[u8], view: &QueryView) -> Option<Plan> {
        if asks_for_dnssec(view) {
            return Some(Plan::Forward);
        }
        let Ok(name) = wire::name_to_string(packet, view.question.name_start) else {
            return Some(Plan::Forward);
        };
        match self.judge(&name, view.question.qtype) {
            Judgement::Plan(plan) => Some(plan),
            Judgement::Nxdomain { .. } => None,
        }
    }

    fn judge<'a>(&'a self, name: &'a str, qtype: u16) -> Judgement<'a> {
        if name.contains('\\') {
            // A label holds a dot or another byte the text escapes (`a\.b`: one label). The
            // rules read names by their text labels, and no Kubernetes name has such a byte:
            // forwarded, never judged by a split that would be wrong.
            return Judgement::Plan(Plan::Forward);
        }
        let Some(exp) = self.policy.decide(name, qtype) else {
            return Judgement::Plan(match self.mode {
                ShortcutMode::Nxdomain | ShortcutMode::Autopath => self.ancestor_plan(name),
                _ => Plan::Forward,
            });
        };
        match self.mode {
            ShortcutMode::Off => Judgement::Plan(Plan::Forward),
            ShortcutMode::Shadow => Judgement::Plan(Plan::Shadow(exp.reason)),
            ShortcutMode::Autopath => Judgement::Plan(Plan::Autopath {
                candidates: self.policy.autopath_candidates(&exp),
                reason: exp.reason,
                soa_zone: self.soa_zone(&exp).to_string(),
            }),
            ShortcutMode::Nxdomain => Judgement::Nxdomain {
                reason: exp.reason,
                soa_zone: self.soa_zone(&exp),
            },
        }
    }
}

impl Shortcut {
    /// The SOA's owner for a synthesized NXDOMAIN: the zone the suffix belongs to, the cluster
    /// domain for the Kubernetes suffixes and the node domain itself otherwise.
    fn soa_zone<'a>(&'a self, exp: &Expansion<'a>) -> &'a str {
        match exp.kind {
            SuffixKind::Namespace | SuffixKind::Svc | SuffixKind::Cluster => &self.cluster_domain,
            SuffixKind::Node | SuffixKind::Other => exp.suffix,
        }
    }
}

/// A query with DO or CD set comes from a DNSSEC-aware client (a validator in the pod, `dig
/// +dnssec`); the pods' stubs (glibc, musl, Go) set neither. Such a query is always forwarded:
/// the proxy can neither prove a denial it makes up nor sign a CNAME it makes up, so a
/// validator downstream reads its NXDOMAIN as bogus (SERVFAIL, on which musl ends the walk)
/// when the suffix's zone is signed (RFC 4035 §3.1.3, §5.4), and autopath's candidate lookups
/// carry neither the RRSIGs a DO client asks for (§3.2.1) nor the client's CD (§3.2.2).
fn asks_for_dnssec(view: &QueryView) -> bool {
    view.dnssec_ok() || view.checking_disabled()
}

/// `decide` without the answer bytes.
enum Judgement<'a> {
    Plan(Plan),
    Nxdomain { reason: Reason, soa_zone: &'a str },
}

impl Shortcut {
    /// For `<host>.<svc>.<ns>.svc.<domain>` or `<svc>.<ns>.svc.<domain>` whose base (under some
    /// reading of the search list) lies in a configured zone: the ancestors to check, the
    /// namespace first. Everything else is forwarded.
    pub fn ancestor_plan(&self, name: &str) -> Plan {
        let bare = name.strip_suffix('.').unwrap_or(name);
        let Some(prefix) = bare.strip_suffix(self.svc_suffix.as_str()) else {
            return Plan::Forward;
        };
        if self.policy.is_exempt(bare) {
            return Plan::Forward;
        }
        let in_zone = self.policy.shape().decompose(bare).any(|d| {
            self.zones
                .iter()
                .any(|z| crate::search::name::in_zone(d.base, z))
        });
        if !in_zone {
            return Plan::Forward;
        }
        let labels: Vec<&str> = prefix.rsplit('.').collect();
        let domain = &self.cluster_domain;
        match labels.as_slice() {
            [ns, svc, _host] => Plan::Ancestors(vec![
                format!("{ns}.svc.{domain}."),
                format!("{svc}.{ns}.svc.{domain}."),
            ]),
            [ns, _svc] => Plan::Ancestors(vec![format!("{ns}.svc.{domain}.")]),
            _ => Plan::Forward,
        }
    }
}

/// NXDOMAIN for the client's question with `zone`'s SOA in the authority section, TTL and
/// MINIMUM both `ttl` (RFC 2308 §3, §5). RA set, AA clear: we are not the zone's authority.
pub fn nxdomain_with_soa(query: &[u8], view: &QueryView, zone: &str, ttl: u32, out: &mut Vec<u8>) {
    negative_with_soa(query, view, wire::RCODE_NXDOMAIN, zone, ttl, out);
}

/// A negative answer to the client's question (`rcode` NXDOMAIN, or NOERROR for NODATA) with
/// `zone`'s SOA, as `nxdomain_with_soa` describes.
fn negative_with_soa(
    query: &[u8],
    view: &QueryView,
    rcode: u8,
    zone: &str,
    ttl: u32,
    out: &mut Vec<u8>,
) {
    wire::minimal_response(query, view, rcode, false, out);
    // minimal_response may have appended an OPT; the SOA goes before it.
    let opt = if view.edns.is_some() {
        out.split_off(view.question.end())
    } else {
        Vec::new()
    };
    let mut owner = Vec::with_capacity(zone.len() + 2);
    if wire::encode_name(zone, &mut owner).is_err() {
        owner.clear();
        owner.push(0);
    }
    out.extend_from_slice(&owner);
    out.extend_from_slice(&wire::TYPE_SOA.to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    // mname and rname under the zone, compressed to the owner (RFC 1035 §4.1.4).
    let owner_ptr = [
        0xc0 | ((view.question.end() >> 8) as u8),
        view.question.end() as u8,
    ];
    out.extend_from_slice(&[2, b'n', b's']);
    out.extend_from_slice(&owner_ptr);
    out.extend_from_slice(&[10]);
    out.extend_from_slice(b"hostmaster");
    out.extend_from_slice(&owner_ptr);
    for v in [1u32, 7200, 1800, 86400, ttl] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let rdlen = (out.len() - rdlen_at - 2) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    out[8..10].copy_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&opt);
}

impl Engine {
    /// Autopath: resolve `candidates` (through the cache) until one exists, and build
    /// `Q CNAME target` + the target's answer. `None` when a candidate could not be resolved:
    /// the caller answers SERVFAIL (or stale), never the upstream's NXDOMAIN for `Q`.
    ///
    /// The stubs decide per pair (resolvers.md §1, §2), so a candidate is judged on its A and
    /// AAAA answers together, whatever type `Q` asks (through the cache and coalesced, so the
    /// two queries of a client's pair share the lookups). That makes every answer for `Q` agree
    /// on its existence and on its one target whatever fails:
    /// - a lookup failed, or upstream answered an error for either type: SERVFAIL;
    /// - data for either type, and the target answers the asked type with records:
    ///   `Q CNAME target` + those records;
    /// - data for either type, and NODATA for the asked type: NODATA for `Q`, no CNAME. A pair
    ///   (glibc's, musl's, Go's A and AAAA) still ends here on the other type's CNAME and
    ///   records. A client asking this type alone (`getaddrinfo(AF_INET6)`, `res_search` for
    ///   TXT or SRV) walks on past a NODATA, in glibc and Go, and would have walked on past the
    ///   target too; `CNAME` + NODATA is an answer to glibc (ANCOUNT > 0) and ended that walk
    ///   at a name without the records. musl stops at a NODATA either way;
    /// - NXDOMAIN and no data: the stubs walk past it, and so does autopath;
    /// - NODATA for both: glibc walks on past such a name while musl stops, and a CNAME to it
    ///   would stop glibc too (it counts the CNAME as an answer). So `Q` gets NXDOMAIN, which is
    ///   true of the expansion, and each stub meets the candidate itself as it would without us.
    pub(crate) async fn autopath(
        &self,
        query: &[u8],
        view: &QueryView,
        candidates: &[String],
        soa_zone: &str,
        refresh: bool,
    ) -> Option<Vec<u8>> {
        let qtype = view.question.qtype;
        let (mut a, mut aaaa, mut asked) = (Vec::new(), Vec::new(), Vec::new());
        // The answer holds while every candidate walked past still does not exist: no longer
        // than the shortest of their negative TTLs (RFC 2308 §5), or the A and AAAA entries
        // of `Q`, which expire apart, would be built on different candidates once one of
        // them came to exist (a new Service): A to the old target, AAAA to the new one.
        let mut valid_for = u32::MAX;
        for candidate in candidates {
            // A candidate the schema allows may still be ruled out by an NXDOMAIN ancestor.
            if let Some(sc) = &self.shortcut {
                if let Plan::Ancestors(ancestors) = sc.ancestor_plan(candidate) {
                    if let Some(ttl) = self.nxdomain_among(&ancestors, &mut asked).await? {
                        valid_for = valid_for.min(ttl);
                        continue;
                    }
                }
            }
            let (ra, raaaa) = tokio::join!(
                self.resolve_cached(candidate, wire::TYPE_A, &mut a, refresh),
                self.resolve_cached(candidate, wire::TYPE_AAAA, &mut aaaa, refresh)
            );
            let pair = [ra?, raaaa?];
            // An upstream error for either type: SERVFAIL for Q, never a CNAME to a name that
            // failed.
            if pair
                .iter()
                .any(|r| r.rcode != wire::RCODE_NOERROR && r.rcode != wire::RCODE_NXDOMAIN)
            {
                return None;
            }
            if pair.iter().any(|r| r.data) {
                let (rendered, found) = match qtype {
                    wire::TYPE_A => (&a, pair[0]),
                    wire::TYPE_AAAA => (&aaaa, pair[1]),
                    _ => {
                        let r = self
                            .resolve_cached(candidate, qtype, &mut asked, refresh)
                            .await?;
                        if r.rcode != wire::RCODE_NOERROR {
                            return None;
                        }
                        (&asked, r)
                    }
                };
                if found.answers == 0 {
                    let ttl = found.negative_ttl.min(valid_for);
                    return Some(self.synthesized_negative(
                        query,
                        view,
                        wire::RCODE_NOERROR,
                        soa_zone,
                        ttl,
                    ));
                }
                return cname_answer(query, candidate, rendered, valid_for);
            }
            if pair.iter().any(|r| r.rcode == wire::RCODE_NXDOMAIN) {
                valid_for = pair.iter().fold(valid_for, |v, r| v.min(r.negative_ttl));
                continue;
            }
            // NODATA for both: NXDOMAIN for the expansion, the candidate left to the client.
            let ttl = pair.iter().fold(valid_for, |v, r| v.min(r.negative_ttl));
            return Some(self.synthesized_negative(
                query,
                view,
                wire::RCODE_NXDOMAIN,
                soa_zone,
                ttl,
            ));
        }
        // No candidate exists: the base does not exist, NXDOMAIN for Q.
        Some(self.synthesized_negative(query, view, wire::RCODE_NXDOMAIN, soa_zone, valid_for))
    }

    /// RFC 8020: NXDOMAIN for the query when one of `ancestors` is NXDOMAIN; `None` to forward.
    pub(crate) async fn ancestors_nxdomain(
        &self,
        query: &[u8],
        view: &QueryView,
        ancestors: &[String],
    ) -> Option<Vec<u8>> {
        let mut rendered = Vec::with_capacity(512);
        let zone = self.config.cluster.domain.as_str();
        // Held no longer than the ancestor's own NXDOMAIN.
        self.nxdomain_among(ancestors, &mut rendered)
            .await?
            .map(|ttl| self.synthesized_negative(query, view, wire::RCODE_NXDOMAIN, zone, ttl))
    }

    /// Whether one of `names` does not exist (asked for type A, through the cache), with what
    /// is left of that NXDOMAIN's TTL. Only an NXDOMAIN with an empty answer section speaks
    /// for the name asked: after a CNAME (an ExternalName Service) it speaks for the chain's
    /// last name (RFC 8020 §2, RFC 6604). `None` inside when every name exists.
    async fn nxdomain_among(
        &self,
        names: &[String],
        rendered: &mut Vec<u8>,
    ) -> Option<Option<u32>> {
        for n in names {
            let r = self
                .resolve_cached(n, wire::TYPE_A, rendered, false)
                .await?;
            if r.rcode == wire::RCODE_NXDOMAIN && r.answers == 0 {
                return Some(Some(r.negative_ttl));
            }
        }
        Some(None)
    }

    /// A negative answer (`rcode` NXDOMAIN, or NOERROR for NODATA) for the query with `zone`'s
    /// SOA (the zone of the search suffix it ends in), held no longer than `valid_for` (the
    /// negative answers it was built on) nor than the configured negative TTL.
    fn synthesized_negative(
        &self,
        query: &[u8],
        view: &QueryView,
        rcode: u8,
        zone: &str,
        valid_for: u32,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let ttl = self.config.cache.negative_max_ttl.min(valid_for);
        negative_with_soa(query, view, rcode, zone, ttl, &mut out);
        out
    }

    /// Look `name`/`qtype` up through the cache (and upstream on a miss, caching the answer);
    /// the answer is left in `rendered`. `None` when upstream failed. `refresh` skips the cache
    /// (a prefetch refreshes what it is built from, not only itself).
    async fn resolve_cached(
        &self,
        name: &str,
        qtype: u16,
        rendered: &mut Vec<u8>,
        refresh: bool,
    ) -> Option<Resolved> {
        let mut cq = Vec::with_capacity(name.len() + 32);
        wire::build_query(0, name, qtype, true, &mut cq).ok()?;
        let cv = wire::parse_query(&cq).ok()?;
        let max = u16::MAX as usize;
        let hit = !refresh
            && matches!(
                self.cache.lookup(&cq, &cv, Instant::now(), max, rendered),
                Lookup::Hit { .. }
            );
        if !hit {
            let key = Key::of_query(&cq, &cv);
            // Coalesced like client queries: the A and AAAA walks of one lookup ask for the
            // same candidate at the same moment.
            let answer = match self.internal_flights.join(key.to_owned_key()) {
                Flight::Follower(rx) => rx.await.ok()??,
                Flight::Leader(owned) => {
                    let answer = async {
                        let zone = self.router.route(cv.question.name_bytes(&cq))?;
                        let reply = self.forward(zone, &cq, &cv, true).await?;
                        let cfg = self.cache.config();
                        let answer =
                            Arc::new(Answer::from_response(&reply.bytes, &reply.info, cfg));
                        super::handler::store_in_cache(&self.cache, &key, &answer);
                        Some(answer)
                    }
                    .await;
                    self.internal_flights.land(&owned, &answer);
                    answer?
                }
            };
            answer.render(&cq, &cv, Served::Cached(0), max, rendered);
        }
        let info = wire::parse_response(rendered).ok()?;
        Some(Resolved {
            rcode: info.rcode as u8,
            answers: info.header.ancount,
            data: wire::answers_of_type(rendered, qtype).ok()? > 0,
            // RFC 2308 §5: a negative answer without an SOA is not to be cached at all.
            negative_ttl: info.negative_ttl.unwrap_or(0),
        })
    }
}

/// What one of the proxy's own lookups found.
#[derive(Clone, Copy)]
struct Resolved {
    rcode: u8,
    answers: u16,
    /// The answer holds records of the asked type (not only a CNAME chain).
    data: bool,
    /// How long a negative answer may be held (RFC 2308 §5: its SOA's TTL and MINIMUM, the
    /// smaller; 0 without an SOA).
    negative_ttl: u32,
}

/// Coalescing of the proxy's own lookups (autopath candidates, ancestor checks).
#[derive(Default)]
pub struct Flights {
    waiting: parking_lot::Mutex<HashMap<OwnedKey, Vec<Landing>>>,
}

/// Where a follower waits for the leader's answer (`None`: the lookup failed).
type Landing = oneshot::Sender<Option<Arc<Answer>>>;

pub enum Flight {
    /// Do the lookup, then call `land`.
    Leader(OwnedKey),
    /// Someone else is doing it: wait for their answer.
    Follower(oneshot::Receiver<Option<Arc<Answer>>>),
}

impl Flights {
    pub fn join(&self, key: OwnedKey) -> Flight {
        let mut w = self.waiting.lock();
        match w.get_mut(&key) {
            Some(list) => {
                let (tx, rx) = oneshot::channel();
                list.push(tx);
                Flight::Follower(rx)
            }
            None => {
                w.insert(key.clone(), Vec::new());
                Flight::Leader(key)
            }
        }
    }

    pub fn land(&self, key: &OwnedKey, answer: &Option<Arc<Answer>>) {
        for tx in self.waiting.lock().remove(key).unwrap_or_default() {
            let _ = tx.send(answer.clone());
        }
    }
}

/// `Q CNAME target` followed by the target's answer records, with the target's rcode and
/// authority section (a NODATA keeps its SOA). Built with hickory-proto, which re-encodes the
/// copied names with fresh compression.
fn cname_answer(
    query: &[u8],
    target: &str,
    target_response: &[u8],
    valid_for: u32,
) -> Option<Vec<u8>> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::{rdata::CNAME, Name, RData, Record};
    let q = Message::from_vec(query).ok()?;
    let mut t = Message::from_vec(target_response).ok()?;
    let owner = q.queries.first()?.name().clone();
    let target_name = in_the_clients_case(&Name::from_ascii(target).ok()?, &owner)?;
    for r in t.answers.iter_mut().chain(t.authorities.iter_mut()) {
        r.ttl = r.ttl.min(valid_for);
    }
    // The target's own records too: glibc's canonical name is the target as written, and a
    // direct walk would have found it in the case the client wrote it (RFC 4343 §4.1).
    for r in t.answers.iter_mut().filter(|r| r.name == target_name) {
        r.name = target_name.clone();
    }
    let ttl = t
        .answers
        .iter()
        .map(|r| r.ttl)
        .min()
        .or_else(|| t.authorities.iter().map(|r| r.ttl).min())
        .unwrap_or(30);
    let cname = Record::from_rdata(owner, ttl, RData::CNAME(CNAME(target_name)));
    t.metadata.id = q.metadata.id;
    t.metadata.recursion_desired = q.metadata.recursion_desired;
    // RFC 4035 §3.2.2: CD is copied from the query.
    t.metadata.checking_disabled = q.metadata.checking_disabled;
    t.metadata.authoritative = false;
    t.queries = q.queries.clone();
    t.answers.insert(0, cname);
    t.additionals.clear();
    t.edns = None;
    t.to_vec().ok()
}

/// `target` with the case of `query_name`'s labels where the two begin alike: the base the
/// client wrote (`MiXeD.example.test` of `MiXeD.example.test.default.svc.cluster.local`), which
/// the candidate lists in lowercase.
fn in_the_clients_case(
    target: &hickory_proto::rr::Name,
    query_name: &hickory_proto::rr::Name,
) -> Option<hickory_proto::rr::Name> {
    let mut written = query_name.iter();
    let mut alike = true;
    let labels = target.iter().map(|label| {
        match written.next() {
            Some(w) if alike && w.eq_ignore_ascii_case(label) => return w,
            _ => alike = false,
        }
        label
    });
    let mut name = hickory_proto::rr::Name::from_labels(labels.collect::<Vec<_>>()).ok()?;
    name.set_fqdn(true);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Autopath's target came back in lowercase (`mixed.example.test` for `MiXeD.example.test`),
    /// and with it glibc's canonical name, where a direct walk keeps the case the client wrote.
    #[test]
    fn autopath_target_was_lowercased() {
        use hickory_proto::op::Message;
        let mut q = Vec::new();
        let asked = "MiXeD.example.test.default.svc.cluster.local.";
        wire::build_query(9, asked, wire::TYPE_A, false, &mut q).unwrap();
        // The target's answer as upstream gives it to the proxy's lowercase query.
        let mut t = Vec::new();
        wire::build_query(1, "mixed.example.test.", wire::TYPE_A, false, &mut t).unwrap();
        t[2] |= 0x80;
        t[7] = 1;
        t.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        let out = cname_answer(&q, "mixed.example.test.", &t, u32::MAX).unwrap();
        let m = Message::from_vec(&out).unwrap();
        let text: Vec<String> = m.answers.iter().map(|r| r.to_string()).collect();
        assert!(text[0].ends_with("CNAME MiXeD.example.test."), "{text:?}");
        assert!(
            text[1].starts_with("MiXeD.example.test. 60 IN A"),
            "{text:?}"
        );
    }

    #[test]
    fn synthesized_nxdomain_carries_a_readable_soa_with_the_ttl() {
        for edns in [false, true] {
            let mut q = Vec::new();
            wire::build_query(
                9,
                "api.github.com.default.svc.cluster.local.",
                1,
                edns,
                &mut q,
            )
            .unwrap();
            let v = wire::parse_query(&q).unwrap();
            let mut out = Vec::new();
            nxdomain_with_soa(&q, &v, "cluster.local", 30, &mut out);
            let r = wire::parse_response(&out).unwrap();
            assert_eq!(r.rcode, wire::RCODE_NXDOMAIN as u16);
            assert_eq!(r.header.nscount, 1);
            assert_eq!(r.negative_ttl, Some(30));
            assert_eq!(r.edns.is_some(), edns);
            let m = hickory_proto::op::Message::from_vec(&out).unwrap();
            assert_eq!(m.authorities[0].name.to_ascii(), "cluster.local.");
        }
    }
}
