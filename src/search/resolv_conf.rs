//! resolv.conf as each stub resolver reads it (resolvers.md §1-§4 "Config").
//!
//! The same file means different things to different libcs: musl ignores a 256-byte line and
//! every option but `ndots`, `timeout` and `attempts`; glibc caps `attempts` at 5 and honours
//! `LOCALDOMAIN`/`RES_OPTIONS`; Go skips a `.` search entry. So the parser takes the stub and
//! produces the settings that stub would run with. The environment is an explicit input: the
//! library never reads the process environment.

use std::net::IpAddr;

use super::stub::Stub;

/// What a stub runs with after reading resolv.conf (and, for glibc/c-ares, the environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverSettings {
    pub ndots: u32,
    /// Search domains in order: lowercase, no trailing dot; `""` is the root.
    pub search: Vec<String>,
    /// At most three (MAXNS), port 53 (every libc ignores a port in resolv.conf but c-ares).
    pub nameservers: Vec<IpAddr>,
    pub timeout_secs: u32,
    pub attempts: u32,
    pub rotate: bool,
    pub single_request: bool,
    pub single_request_reopen: bool,
    pub use_vc: bool,
    pub no_tld_query: bool,
    pub edns0: bool,
    pub trust_ad: bool,
    pub no_aaaa: bool,
}

/// The process environment a stub would see. glibc reads `LOCALDOMAIN` and `RES_OPTIONS`
/// (res_init.c res_vinit_1); c-ares reads both too (first word of `LOCALDOMAIN` only); musl and
/// Go's pure resolver read neither. `hostname` is used when there is no search list at all
/// (glibc and Go take the domain part of the host name).
#[derive(Clone, Debug, Default)]
pub struct Environment<'a> {
    pub localdomain: Option<&'a str>,
    pub res_options: Option<&'a str>,
    pub hostname: Option<&'a str>,
}

/// glibc RES_MAXNDOTS, also musl's and Go's cap (resolvers.md summary "ndots cap").
pub const MAX_NDOTS: u32 = 15;

impl ResolverSettings {
    /// The settings with no resolv.conf at all: ndots 1, no search list.
    pub fn defaults(stub: Stub) -> Self {
        let (timeout_secs, attempts) = match stub {
            Stub::Glibc | Stub::Go | Stub::Go119 | Stub::Hickory => (5, 2),
            Stub::Musl | Stub::MuslPre124 => (5, 2),
            Stub::CAres => (2, 3),
            // ares_private.h before 1.2x: DEFAULT_TIMEOUT 5000 ms, DEFAULT_TRIES 4.
            Stub::CAres118 => (5, 4),
        };
        ResolverSettings {
            ndots: 1,
            search: Vec::new(),
            nameservers: Vec::new(),
            timeout_secs,
            attempts,
            rotate: false,
            single_request: false,
            single_request_reopen: false,
            use_vc: false,
            no_tld_query: false,
            edns0: false,
            trust_ad: false,
            no_aaaa: false,
        }
    }

    /// Read a resolv.conf the way `stub` does. Unknown keywords and options are ignored, as
    /// every implementation does.
    pub fn from_resolv_conf(text: &str, stub: Stub, env: &Environment<'_>) -> Self {
        if stub == Stub::Hickory {
            return Self::hickory(text, env);
        }
        let mut s = ResolverSettings::defaults(stub);
        let mut search: Option<Vec<String>> = None;
        // glibc: LOCALDOMAIN replaces both `search` and `domain` (res_init.c: `haveenv`).
        let env_search = match stub {
            Stub::Glibc => env.localdomain.map(|v| {
                let v = v.split('\n').next().unwrap_or("");
                let list: Vec<String> = v
                    .split([' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .map(norm)
                    .collect();
                // LOCALDOMAIN="" leaves the list as [root] (resolvers.md, verified).
                if list.is_empty() {
                    vec![String::new()]
                } else {
                    list
                }
            }),
            // ares_sysconfig.c: LOCALDOMAIN keeps its first word; an empty one empties the
            // list (verified with 1.34.9: only "name." is sent).
            Stub::CAres => env.localdomain.map(|v| {
                v.split_whitespace()
                    .next()
                    .map(|w| vec![norm(w)])
                    .unwrap_or_default()
            }),
            // 1.18 ares_init.c init_by_environment: set_search keeps every word (verified);
            // an empty value sets nothing.
            Stub::CAres118 => env.localdomain.and_then(|v| {
                let list: Vec<String> = v.split_whitespace().map(norm).collect();
                (!list.is_empty()).then_some(list)
            }),
            Stub::Musl | Stub::MuslPre124 | Stub::Go | Stub::Go119 | Stub::Hickory => None,
        };

        // c-ares 1.18 set_options: an option already set keeps its value, and RES_OPTIONS
        // (init_by_environment) is read before the file, so the first value wins.
        let mut cares118_options = String::new();
        if let (Some(opts), Stub::CAres118) = (env.res_options, stub) {
            cares118_options.push_str(opts);
        }
        let mut raw_lines = text.split_inclusive('\n').peekable();
        while let Some(raw) = raw_lines.next() {
            // musl resolvconf.c: `char line[256]` read with fgets; a line that does not fit
            // (256 bytes or more with its newline) is skipped entirely, unless it is the last
            // line of the file and fits without a newline.
            if stub.is_musl() {
                let last_without_nl = !raw.ends_with('\n') && raw_lines.peek().is_none();
                if raw.len() >= 256 && !(last_without_nl && raw.len() <= 255) {
                    continue;
                }
            }
            let line = raw.trim_end_matches(['\n', '\r']);
            let (keyword, rest) = match split_keyword(line) {
                Some(kw) => kw,
                None => continue,
            };
            // Comments: glibc and Go skip lines starting with `#` or `;`; musl matches keywords
            // at the line start, so a comment never matches one either.
            match keyword {
                // MAXNS = 3; an address with a port does not parse and is dropped.
                "nameserver" if s.nameservers.len() < 3 => {
                    let w = rest.split_whitespace().next().unwrap_or("");
                    let ip = w.split('%').next().unwrap_or("");
                    if let Ok(ip) = ip.parse::<IpAddr>() {
                        s.nameservers.push(ip);
                    }
                }
                "domain" | "search" => {
                    let words: Vec<&str> = match (stub, keyword) {
                        // musl resolvconf.c copies the rest of a `domain` line like `search`.
                        (Stub::Musl | Stub::MuslPre124, _) => rest.split_whitespace().collect(),
                        // glibc res_init.c: `domain` keeps its first word; Go: f[1];
                        // c-ares: `domain` only if no search (handled below); before 1.34
                        // (config_domain) the last `domain` or `search` line wins.
                        (_, "domain") => rest.split_whitespace().take(1).collect(),
                        _ => rest.split_whitespace().collect(),
                    };
                    if words.is_empty() {
                        continue;
                    }
                    let mut list: Vec<String> = words.iter().map(|w| norm(w)).collect();
                    if stub.is_go() {
                        // dnsconfig_unix.go: a search entry of "." is skipped.
                        list.retain(|d| !d.is_empty());
                    }
                    if stub == Stub::CAres && keyword == "domain" {
                        // ares_sysconfig_files.c: `domain` applies only without `search`.
                        if search.is_none() {
                            search = Some(list);
                        }
                        continue;
                    }
                    search = Some(list);
                }
                "options" if stub == Stub::CAres118 => {
                    cares118_options.push(' ');
                    cares118_options.push_str(rest);
                }
                "options" => s.apply_options(rest, stub),
                _ => {}
            }
        }
        if stub == Stub::CAres118 {
            s.apply_cares118_options(&cares118_options);
        }
        if let Some(list) = env_search {
            search = Some(list);
        }
        if let (Some(opts), Stub::Glibc | Stub::CAres) = (env.res_options, stub) {
            // RES_OPTIONS is parsed after the file with the same parser, and wins.
            s.apply_options(opts, stub);
        }
        s.search = match search {
            Some(l) => l,
            None => match (stub, env.hostname.and_then(|h| h.split_once('.'))) {
                // glibc res_init.c domain_from_hostname, Go dnsDefaultSearch.
                (Stub::Glibc | Stub::Go | Stub::Go119, Some((_, d))) if !d.is_empty() => {
                    vec![norm(d)]
                }
                _ => Vec::new(),
            },
        };
        s
    }

    /// hickory-resolver 0.26 reads resolv.conf with the resolv-conf crate (0.7) and keeps only
    /// nameservers, the search list, ndots, timeout, attempts and edns0 (system_conf/unix.rs);
    /// no environment variable. Its `domain` (the `domain` line, else the host name's domain)
    /// is tried before the search list, so it comes first here; the stub model drops it when
    /// the list has it too.
    fn hickory(text: &str, env: &Environment<'_>) -> Self {
        let mut s = ResolverSettings::defaults(Stub::Hickory);
        let mut domain: Option<String> = None;
        let mut search: Vec<String> = Vec::new();
        for line in text.split('\n') {
            // Everything after ';' or '#' is a comment; the keyword is the first word.
            let text = line.split([';', '#']).next().unwrap_or("");
            let mut words = text.split_whitespace();
            match words.next() {
                Some("nameserver") if s.nameservers.len() < 3 => {
                    let w = words.next().unwrap_or("");
                    if let Ok(ip) = w.split('%').next().unwrap_or("").parse::<IpAddr>() {
                        s.nameservers.push(ip);
                    }
                }
                // `domain` keeps its first word; it and `search` replace each other.
                Some("domain") => {
                    if let Some(d) = words.next() {
                        domain = Some(norm(d));
                        search = vec![norm(d)];
                    }
                }
                // Words with a comma are dropped (resolv-conf #58), `--` too (system_conf).
                Some("search") => {
                    search = words
                        .filter(|w| !w.contains(',') && *w != "--")
                        .map(norm)
                        .collect();
                }
                Some("options") => {
                    for word in words {
                        // u32::from_str: no cap; a negative or bad value is ignored.
                        let num = |v: &str| v.parse::<u32>().ok();
                        match word.split_once(':') {
                            Some(("ndots", v)) => s.ndots = num(v).unwrap_or(s.ndots),
                            Some(("timeout", v)) => {
                                s.timeout_secs = num(v).unwrap_or(s.timeout_secs)
                            }
                            Some(("attempts", v)) => s.attempts = num(v).unwrap_or(s.attempts),
                            _ if word == "edns0" => s.edns0 = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        // get_system_domain: the `domain` line, else what follows the host name's first dot.
        let domain = domain.or_else(|| {
            env.hostname
                .and_then(|h| h.split_once('.'))
                .map(|(_, d)| norm(d))
                .filter(|d| !d.is_empty())
        });
        s.search = domain.into_iter().chain(search).collect();
        s
    }

    /// c-ares 1.18 set_options: only `ndots:`, `retrans:` (milliseconds), `retry:` and `rotate`
    /// (glibc's `timeout:` and `attempts:` came in later versions; verified: ignored), and the
    /// first value of each wins.
    fn apply_cares118_options(&mut self, words: &str) {
        let (mut ndots, mut timeout, mut tries) = (None, None, None);
        for word in words.split_whitespace() {
            if let Some(v) = word.strip_prefix("ndots:") {
                // strtol; a negative value leaves the option unset (the -1 sentinel).
                ndots = ndots.or((atoi(v) >= 0).then(|| atoi(v).min(u32::MAX as i64) as u32));
            } else if let Some(v) = word.strip_prefix("retrans:") {
                timeout = timeout.or(Some((atoi(v).max(0) as u32).div_ceil(1000)));
            } else if let Some(v) = word.strip_prefix("retry:") {
                tries = tries.or(Some(atoi(v).max(0) as u32));
            } else if word.starts_with("rotate") {
                self.rotate = true;
            }
        }
        self.ndots = ndots.unwrap_or(self.ndots);
        self.timeout_secs = timeout.unwrap_or(self.timeout_secs);
        self.attempts = tries.unwrap_or(self.attempts);
    }

    /// Parse the words of an `options` line (or `RES_OPTIONS`) for `stub`.
    fn apply_options(&mut self, rest: &str, stub: Stub) {
        if stub.is_musl() {
            // musl resolvconf.c: strstr() for each of the three options anywhere on the line,
            // and only when a digit follows the colon.
            for (key, cap) in [("ndots:", 15u32), ("attempts:", 10), ("timeout:", 60)] {
                if let Some(i) = rest.find(key) {
                    let digits: String = rest[i + key.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    if let Ok(v) = digits.parse::<u64>() {
                        let v = v.min(cap as u64) as u32;
                        match key {
                            "ndots:" => self.ndots = v,
                            "attempts:" => self.attempts = v,
                            _ => self.timeout_secs = v,
                        }
                    }
                }
            }
            return;
        }
        for word in rest.split_whitespace() {
            if let Some(v) = word.strip_prefix("ndots:") {
                self.ndots = match stub {
                    // res_init.c: atoi(), then `i <= RES_MAXNDOTS ? i : RES_MAXNDOTS`; a negative
                    // value lands in the 4-bit field `ndots:4`.
                    Stub::Glibc => {
                        let i = atoi(v);
                        if i <= MAX_NDOTS as i64 {
                            (i & 15) as u32
                        } else {
                            MAX_NDOTS
                        }
                    }
                    // dnsconfig_unix.go: dtoi clamped to 0..=15.
                    Stub::Go | Stub::Go119 => atoi(v).clamp(0, MAX_NDOTS as i64) as u32,
                    // c-ares: no cap.
                    _ => atoi(v).clamp(0, u32::MAX as i64) as u32,
                };
            } else if let Some(v) = word.strip_prefix("timeout:") {
                let i = atoi(v).max(0) as u32;
                self.timeout_secs = match stub {
                    Stub::Glibc => i.min(30), // RES_MAXRETRANS
                    _ => i,
                };
            } else if let (Some(v), Stub::CAres) = (word.strip_prefix("retrans:"), stub) {
                // c-ares' BSD name for the timeout, in milliseconds.
                self.timeout_secs = (atoi(v).max(0) as u32).div_ceil(1000);
            } else if let Some(v) = word.strip_prefix("attempts:").or_else(|| {
                // c-ares' BSD name for attempts.
                word.strip_prefix("retry:").filter(|_| stub == Stub::CAres)
            }) {
                let i = atoi(v).max(0) as u32;
                self.attempts = match stub {
                    Stub::Glibc => i.min(5), // RES_MAXRETRY
                    _ => i,
                };
            } else {
                // Go 1.19 reads resolv.conf as Go does.
                let known_to = |stubs: &[Stub]| {
                    stubs.contains(&stub) || (stub == Stub::Go119 && stubs.contains(&Stub::Go))
                };
                match word {
                    "rotate" => self.rotate = true,
                    "single-request" if known_to(&[Stub::Glibc, Stub::Go]) => {
                        self.single_request = true
                    }
                    "single-request-reopen" if known_to(&[Stub::Glibc, Stub::Go]) => {
                        self.single_request_reopen = true
                    }
                    "use-vc" | "usevc" | "tcp" => self.use_vc = true,
                    "no-tld-query" if stub == Stub::Glibc => self.no_tld_query = true,
                    "edns0" if known_to(&[Stub::Glibc, Stub::Go]) => self.edns0 = true,
                    "trust-ad" if known_to(&[Stub::Glibc, Stub::Go]) => self.trust_ad = true,
                    "no-aaaa" if stub == Stub::Glibc => self.no_aaaa = true,
                    _ => {}
                }
            }
        }
    }

    /// Apply a `--ndots` override with the stub's cap.
    pub fn set_ndots(&mut self, ndots: u32, stub: Stub) {
        self.ndots = match stub {
            Stub::CAres | Stub::CAres118 | Stub::Hickory => ndots,
            _ => ndots.min(MAX_NDOTS),
        };
    }

    /// Apply a `--search` override (space-separated as in resolv.conf).
    pub fn set_search(&mut self, list: &str) {
        self.search = list.split_whitespace().map(norm).collect();
    }
}

/// `search` / `domain` / `options` / `nameserver` at the start of a line followed by a space or
/// a tab (glibc's MATCH macro; musl's `isspace(line[n])`). A bare keyword with nothing after it
/// sets nothing.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    if line.starts_with('#') || line.starts_with(';') {
        return None;
    }
    for kw in ["nameserver", "domain", "search", "options"] {
        if let Some(rest) = line.strip_prefix(kw) {
            if rest.starts_with([' ', '\t']) {
                return Some((kw, rest));
            }
        }
    }
    None
}

/// A search domain as stored: lowercase, trailing dot dropped; `.` becomes the root `""`.
fn norm(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// C `atoi`/`strtol` on a prefix: optional sign then digits; anything else gives 0.
fn atoi(s: &str) -> i64 {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut v: i64 = 0;
    for c in digits.chars().take_while(|c| c.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add((c as u8 - b'0') as i64);
    }
    if neg {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, stub: Stub) -> ResolverSettings {
        ResolverSettings::from_resolv_conf(text, stub, &Environment::default())
    }

    const POD: &str = "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";

    #[test]
    fn pod_file_reads_the_same_everywhere() {
        for stub in [Stub::Glibc, Stub::Musl, Stub::Go, Stub::CAres] {
            let s = parse(POD, stub);
            assert_eq!(s.ndots, 5, "{stub:?}");
            assert_eq!(
                s.search,
                [
                    "default.svc.cluster.local",
                    "svc.cluster.local",
                    "cluster.local"
                ]
            );
            assert_eq!(s.nameservers, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
        }
    }

    #[test]
    fn last_of_search_and_domain_wins() {
        let t = "search a.example b.example\ndomain c.example\n";
        assert_eq!(parse(t, Stub::Glibc).search, ["c.example"]);
        assert_eq!(parse(t, Stub::Musl).search, ["c.example"]);
        // musl reads every word of a `domain` line; glibc the first.
        let t = "domain c.example d.example\n";
        assert_eq!(parse(t, Stub::Musl).search, ["c.example", "d.example"]);
        assert_eq!(parse(t, Stub::Glibc).search, ["c.example"]);
        let t = "domain c.example\nsearch a.example b.example\n";
        assert_eq!(parse(t, Stub::Glibc).search, ["a.example", "b.example"]);
        // c-ares: domain applies only when no search was set; before 1.34 the last line wins
        // (verified with 1.18.1).
        assert_eq!(
            parse("search a.example\ndomain c.example\n", Stub::CAres).search,
            ["a.example"]
        );
        assert_eq!(
            parse("search a.example\ndomain c.example d\n", Stub::CAres118).search,
            ["c.example"]
        );
    }

    #[test]
    fn hickory_reads_resolv_conf_like_the_resolv_conf_crate() {
        // Indented keywords and comments after the value count; commas and `--` are dropped.
        let s = parse(
            "  search a.example b,c -- d.example ; comment\noptions ndots:20 ndots:-1 timeout:3\n",
            Stub::Hickory,
        );
        assert_eq!(s.search, ["a.example", "d.example"]);
        assert_eq!((s.ndots, s.timeout_secs), (20, 3));
        // `domain` keeps its first word, replaces `search`, and is the system domain.
        let s = parse(
            "search a.example\ndomain c.example d.example\n",
            Stub::Hickory,
        );
        assert_eq!(s.search, ["c.example", "c.example"]);
        // No environment variables are read.
        let env = Environment {
            localdomain: Some("x.example"),
            res_options: Some("ndots:1"),
            hostname: None,
        };
        let h = ResolverSettings::from_resolv_conf(POD, Stub::Hickory, &env);
        assert_eq!((h.ndots, h.search.len()), (5, 3));
    }

    #[test]
    fn cares_118_options_first_value_wins_and_env_first() {
        // Verified with 1.18.1: `options ndots:3 ndots:1` searches "a.b" with ndots 3.
        let s = parse("options ndots:3 ndots:1\noptions ndots:2\n", Stub::CAres118);
        assert_eq!(s.ndots, 3);
        // glibc's timeout:/attempts: are not read; retrans: is milliseconds.
        let s = parse(
            "options timeout:1 attempts:1\noptions retrans:1500 retry:2\n",
            Stub::CAres118,
        );
        assert_eq!((s.timeout_secs, s.attempts), (2, 2));
        let s = parse("options timeout:1 attempts:1\n", Stub::CAres118);
        assert_eq!((s.timeout_secs, s.attempts), (5, 4));
        let env = Environment {
            localdomain: Some("x.example y.example"),
            res_options: Some("ndots:1"),
            hostname: None,
        };
        let c = ResolverSettings::from_resolv_conf(POD, Stub::CAres118, &env);
        assert_eq!(c.ndots, 1);
        assert_eq!(c.search, ["x.example", "y.example"]);
        // An empty LOCALDOMAIN sets nothing: the file's list stays.
        let empty = Environment {
            localdomain: Some(""),
            ..Default::default()
        };
        let c = ResolverSettings::from_resolv_conf(POD, Stub::CAres118, &empty);
        assert_eq!(c.search.len(), 3);
        // retrans:/retry: are c-ares names; glibc ignores them.
        let g = parse("options retrans:9000 retry:1\n", Stub::Glibc);
        assert_eq!((g.timeout_secs, g.attempts), (5, 2));
    }

    #[test]
    fn trailing_dots_and_root() {
        let s = parse(
            "search Default.svc.cluster.local. svc.cluster.local. .\n",
            Stub::Glibc,
        );
        assert_eq!(
            s.search,
            ["default.svc.cluster.local", "svc.cluster.local", ""]
        );
        // Go skips ".".
        let s = parse("search a.example. .\n", Stub::Go);
        assert_eq!(s.search, ["a.example"]);
    }

    #[test]
    fn comments_and_unknown_lines() {
        let t = "# search evil.example\n; options ndots:9\nsortlist 10.0.0.0\nsearch ok.example\noptions bogus ndots:2 whatever\n";
        let s = parse(t, Stub::Glibc);
        assert_eq!(s.search, ["ok.example"]);
        assert_eq!(s.ndots, 2);
    }

    #[test]
    fn ndots_caps_per_libc() {
        assert_eq!(parse("options ndots:40\n", Stub::Glibc).ndots, 15);
        assert_eq!(parse("options ndots:40\n", Stub::Musl).ndots, 15);
        assert_eq!(parse("options ndots:40\n", Stub::Go).ndots, 15);
        assert_eq!(parse("options ndots:40\n", Stub::CAres).ndots, 40);
        // musl needs a digit after the colon; glibc's atoi gives 0.
        assert_eq!(parse("options ndots:x\n", Stub::Musl).ndots, 1);
        assert_eq!(parse("options ndots:x\n", Stub::Glibc).ndots, 0);
    }

    #[test]
    fn timeouts_and_attempts_caps() {
        let t = "options timeout:90 attempts:9\n";
        let g = parse(t, Stub::Glibc);
        assert_eq!((g.timeout_secs, g.attempts), (30, 5));
        let m = parse(t, Stub::Musl);
        assert_eq!((m.timeout_secs, m.attempts), (60, 9));
    }

    #[test]
    fn options_each_libc_knows() {
        let t = "options rotate single-request single-request-reopen use-vc no-tld-query edns0 trust-ad no-aaaa\n";
        let g = parse(t, Stub::Glibc);
        assert!(g.rotate && g.single_request && g.single_request_reopen && g.use_vc);
        assert!(g.no_tld_query && g.edns0 && g.trust_ad && g.no_aaaa);
        let m = parse(t, Stub::Musl);
        assert!(!m.rotate && !m.single_request && !m.no_tld_query && !m.no_aaaa && !m.use_vc);
        let go = parse(t, Stub::Go);
        assert!(go.rotate && go.single_request && !go.no_tld_query && !go.no_aaaa);
    }

    #[test]
    fn musl_ignores_a_256_byte_line() {
        let long = format!("search {}\n", vec!["abcdefghi.example"; 14].join(" "));
        assert!(long.len() >= 256);
        let t = format!("search short.example\n{long}options ndots:3\n");
        assert_eq!(parse(&t, Stub::Musl).search, ["short.example"]);
        assert_eq!(parse(&t, Stub::Glibc).search.len(), 14);
        // 255 bytes with the newline still fits.
        let fits = format!("search {}\n", "a".repeat(247));
        assert_eq!(fits.len(), 255);
        assert_eq!(parse(&fits, Stub::Musl).search.len(), 1);
    }

    #[test]
    fn environment_for_glibc_only() {
        let env = Environment {
            localdomain: Some("x.example y.example"),
            res_options: Some("ndots:1"),
            hostname: None,
        };
        let g = ResolverSettings::from_resolv_conf(POD, Stub::Glibc, &env);
        assert_eq!(g.search, ["x.example", "y.example"]);
        assert_eq!(g.ndots, 1);
        let m = ResolverSettings::from_resolv_conf(POD, Stub::Musl, &env);
        assert_eq!(m.ndots, 5);
        assert_eq!(m.search.len(), 3);
        let c = ResolverSettings::from_resolv_conf(POD, Stub::CAres, &env);
        assert_eq!(c.search, ["x.example"]);
        let c = ResolverSettings::from_resolv_conf(
            POD,
            Stub::CAres,
            &Environment {
                localdomain: Some(""),
                ..Default::default()
            },
        );
        assert!(c.search.is_empty());
        let empty = Environment {
            localdomain: Some(""),
            ..Default::default()
        };
        assert_eq!(
            ResolverSettings::from_resolv_conf(POD, Stub::Glibc, &empty).search,
            [""]
        );
    }

    #[test]
    fn hostname_domain_when_no_search() {
        let env = Environment {
            hostname: Some("node1.corp.example"),
            ..Default::default()
        };
        let t = "nameserver 10.0.0.1\n";
        assert_eq!(
            ResolverSettings::from_resolv_conf(t, Stub::Glibc, &env).search,
            ["corp.example"]
        );
        assert!(ResolverSettings::from_resolv_conf(t, Stub::Musl, &env)
            .search
            .is_empty());
    }

    #[test]
    fn nameservers_capped_and_ports_dropped() {
        let t = "nameserver 1.1.1.1\nnameserver 127.0.0.1:5353\nnameserver fe80::1%eth0\nnameserver 2.2.2.2\nnameserver 3.3.3.3\n";
        let s = parse(t, Stub::Glibc);
        assert_eq!(s.nameservers.len(), 3);
        assert_eq!(s.nameservers[1], "fe80::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn real_files_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/resolv");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let s = parse(&text, Stub::Glibc);
            assert!(!s.search.is_empty(), "{}", e.path().display());
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with("06-") {
                // `domain` then `search` with trailing dots: the search line wins.
                assert_eq!(
                    s.search,
                    [
                        "c.some-project-123.internal",
                        "987654321.google.internal",
                        "google.internal"
                    ]
                );
                assert_eq!(s.ndots, 1);
                assert_eq!(s.nameservers.len(), 2);
            }
            if file.starts_with("03b-") {
                assert_eq!((s.timeout_secs, s.attempts), (2, 5));
                assert_eq!(
                    s.search,
                    [
                        "eu-central-1.compute.internal",
                        "us-west-2.compute.internal"
                    ]
                );
            }
            if file.starts_with("05-") {
                // Two files pasted together: the last search line wins.
                assert_eq!(s.search[0], "mycorp.svc.mycorp-test");
            }
            assert!(s
                .search
                .iter()
                .all(|d| !d.ends_with('.') && *d == d.to_ascii_lowercase()));
            n += 1;
        }
        assert!(n >= 10);
    }
}
