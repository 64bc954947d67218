//! Small helpers on domain names in presentation form, shared by the stub models, the
//! decomposition and the schema. Names in this module are compared ASCII-case-insensitively
//! (RFC 4343); callers usually hand in lowercase names already.

/// Lowercase and make absolute (one trailing dot). The root stays `"."`.
pub fn absolute(name: &str) -> String {
    let trimmed = name.trim_end_matches('.');
    let mut s = String::with_capacity(trimmed.len() + 1);
    s.push_str(trimmed);
    s.make_ascii_lowercase();
    s.push('.');
    s
}

/// Join `base` and `suffix` into an absolute name (`web` + `prod.svc.cluster.local` ->
/// `web.prod.svc.cluster.local.`). An empty suffix is the root.
pub fn join(base: &str, suffix: &str) -> String {
    let base = base.trim_end_matches('.');
    let suffix = suffix.trim_end_matches('.');
    let mut s = String::with_capacity(base.len() + suffix.len() + 2);
    s.push_str(base);
    s.push('.');
    if !suffix.is_empty() {
        s.push_str(suffix);
        s.push('.');
    }
    s.make_ascii_lowercase();
    s
}

/// Can this name be put in a query? RFC 1035 §2.3.4: labels of 1..=63 octets, at most 255
/// octets on the wire, which is 253 characters of presentation text without the final dot.
/// A name that fails this makes `res_mkquery` fail in every libc.
pub fn encodable(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() {
        return true; // the root
    }
    n.len() <= 253 && n.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

/// `true` when `name` equals `zone` or lies below it, on a label boundary. Both without
/// trailing dots; the empty zone is the root and contains everything.
pub fn in_zone(name: &str, zone: &str) -> bool {
    if zone.is_empty() {
        return true;
    }
    if name.len() == zone.len() {
        return name.eq_ignore_ascii_case(zone);
    }
    name.len() > zone.len()
        && name.as_bytes()[name.len() - zone.len() - 1] == b'.'
        && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
}

/// RFC 1123 §2.1 label as Kubernetes validates names (`IsDNS1123Label`): 1..=63 of
/// `[a-z0-9-]`, starting and ending with a letter or digit. Case-insensitive here because
/// queries may carry any case (RFC 4343).
pub fn is_rfc1123_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_join() {
        assert_eq!(absolute("Foo.Bar"), "foo.bar.");
        assert_eq!(absolute("foo.bar."), "foo.bar.");
        assert_eq!(absolute(""), ".");
        assert_eq!(
            join("web", "Prod.svc.cluster.local."),
            "web.prod.svc.cluster.local."
        );
        assert_eq!(join("web", ""), "web.");
    }

    #[test]
    fn encodable_limits() {
        assert!(encodable("a.b."));
        assert!(!encodable(&format!("{}.", "a".repeat(64))));
        assert!(encodable(&format!("{}.", "a".repeat(63))));
        assert!(!encodable("a..b"));
        let long = vec!["a".repeat(50); 5].join("."); // 254 chars
        assert!(!encodable(&long));
        assert!(encodable(&long[..253]));
    }

    #[test]
    fn zones_match_on_label_boundaries() {
        assert!(in_zone("api.github.com", "github.com"));
        assert!(in_zone("github.com", "github.com"));
        assert!(!in_zone("notgithub.com", "github.com"));
        assert!(in_zone("API.GitHub.com", "github.com"));
        assert!(!in_zone("com", "github.com"));
    }

    #[test]
    fn rfc1123_labels() {
        assert!(is_rfc1123_label("prod"));
        assert!(is_rfc1123_label("a-1"));
        assert!(!is_rfc1123_label("-a"));
        assert!(!is_rfc1123_label("a-"));
        assert!(!is_rfc1123_label("a_b"));
        assert!(!is_rfc1123_label(&"a".repeat(64)));
        assert!(!is_rfc1123_label(""));
    }
}
