//! Hot-path DNS message view and patching (RFC 1035 §4.1).
//!
//! Bytes from the network are untrusted: every read is bounds-checked, name decompression follows
//! at most `MAX_POINTER_HOPS` pointers and only backwards, and a name is at most 255 octets
//! (RFC 1035 §2.3.4). Nothing here allocates on the query path; responses are parsed once when
//! they enter the cache, and cache hits are patched in place (ID, question case, TTLs).

use std::fmt::Write as _;

pub const HEADER_LEN: usize = 12;
/// RFC 1035 §2.3.4: a name is at most 255 octets on the wire.
pub const MAX_NAME_LEN: usize = 255;
/// Bound on compression pointers followed while reading one name: more than any legal name needs
/// (127 labels), so a pointer loop ends as an error instead of a hang.
const MAX_POINTER_HOPS: usize = 128;
/// UDP payload a client without EDNS may receive (RFC 1035 §4.2.1).
pub const PLAIN_UDP_SIZE: u16 = 512;
/// The UDP payload size we advertise and accept by default (DNS Flag Day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_RRSIG: u16 = 46;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// RFC 6891 §6.1.3: extended RCODE 16, the query's EDNS version is not implemented.
pub const RCODE_BADVERS: u16 = 16;
/// RFC 7871: the EDNS Client Subnet option code.
pub const EDNS_OPTION_ECS: u16 = 8;

// Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD/CD).
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;
/// DO bit in the OPT TTL field (RFC 3225 §3).
pub const EDNS_FLAG_DO: u16 = 0x8000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message shorter than its header")]
    ShortHeader,
    #[error("message ends inside a record or name")]
    Truncated,
    #[error("label type not allowed (RFC 6891 §5 retired extended labels)")]
    BadLabel,
    #[error("compression pointer loop or forward pointer")]
    BadPointer,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("no question")]
    NoQuestion,
    #[error("more than one question")]
    SeveralQuestions,
    #[error("more than one OPT record")]
    SeveralOpt,
    #[error("OPT record owned by a name other than the root (RFC 6891 §6.1.2)")]
    OptOwner,
    #[error("OPT record outside the additional section (RFC 6891 §6.1.1)")]
    OptPlacement,
}

/// The fixed header (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    pub fn parse(buf: &[u8]) -> Result<Header, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::ShortHeader);
        }
        Ok(Header {
            id: be16(buf, 0),
            flags: be16(buf, 2),
            qdcount: be16(buf, 4),
            ancount: be16(buf, 6),
            nscount: be16(buf, 8),
            arcount: be16(buf, 10),
        })
    }
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
    /// The header's 4-bit RCODE (an OPT record may extend it: see `ResponseInfo::rcode`).
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }
    pub fn tc(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walk one (possibly compressed) name starting at `at`. Returns the offset just past the name
/// as it sits in place (after the first pointer, if any) and the uncompressed length.
pub fn skip_name(buf: &[u8], at: usize) -> Result<(usize, usize), WireError> {
    let mut pos = at;
    let mut end_in_place = None;
    let mut total = 0usize;
    let mut hops = 0usize;
    loop {
        let len = *buf.get(pos).ok_or(WireError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 => {
                total += len + 1;
                if total > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                if len == 0 {
                    return Ok((end_in_place.unwrap_or(pos + 1), total));
                }
                pos += 1 + len;
                if pos > buf.len() {
                    return Err(WireError::Truncated);
                }
            }
            0xc0 => {
                let b2 = *buf.get(pos + 1).ok_or(WireError::Truncated)? as usize;
                let target = ((len & 0x3f) << 8) | b2;
                // Pointers must go backwards (RFC 1035 §4.1.4 "a prior occurrence"); together
                // with the hop bound this rules out loops.
                if target >= pos || hops >= MAX_POINTER_HOPS {
                    return Err(WireError::BadPointer);
                }
                hops += 1;
                if end_in_place.is_none() {
                    end_in_place = Some(pos + 2);
                }
                pos = target;
            }
            _ => return Err(WireError::BadLabel),
        }
    }
}

/// Append the presentation form of the name at `at` (lowercase, absolute with a trailing dot,
/// `\DDD` for bytes outside the hostname set) to `out`.
pub fn write_name(buf: &[u8], at: usize, out: &mut String) -> Result<usize, WireError> {
    let (end, _) = skip_name(buf, at)?; // validates before we read
    let mut pos = at;
    let mut wrote_label = false;
    loop {
        let len = buf[pos] as usize;
        if len & 0xc0 == 0xc0 {
            pos = ((len & 0x3f) << 8) | buf[pos + 1] as usize;
            continue;
        }
        if len == 0 {
            break;
        }
        for &c in &buf[pos + 1..pos + 1 + len] {
            let c = c.to_ascii_lowercase();
            match c {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*' | b'/' => out.push(c as char),
                b'.' | b'\\' => {
                    out.push('\\');
                    out.push(c as char);
                }
                _ => {
                    let _ = write!(out, "\\{:03}", c);
                }
            }
        }
        out.push('.');
        wrote_label = true;
        pos += 1 + len;
    }
    if !wrote_label {
        out.push('.');
    }
    Ok(end)
}

/// The name at `at` as a lowercase absolute presentation string.
pub fn name_to_string(buf: &[u8], at: usize) -> Result<String, WireError> {
    let mut s = String::with_capacity(64);
    write_name(buf, at, &mut s)?;
    Ok(s)
}

/// Encode a presentation name (`a.b.c.` or `a.b.c`) into uncompressed wire form.
pub fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_empty() {
        for label in name.split('.') {
            let bytes = label.as_bytes();
            if bytes.is_empty() || bytes.len() > 63 {
                out.truncate(start);
                return Err(WireError::BadLabel);
            }
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME_LEN {
        out.truncate(start);
        return Err(WireError::NameTooLong);
    }
    Ok(())
}

/// The question section's one entry, as it sits in the buffer. The name of the first question
/// can never be compressed (a pointer could only reach into the header), so it is a plain range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// Offset of the name (always `HEADER_LEN` for the first question).
    pub name_start: usize,
    /// Offset just past the name.
    pub name_end: usize,
    pub qtype: u16,
    pub qclass: u16,
}

impl Question {
    pub fn name_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.name_start..self.name_end]
    }
    /// Offset just past qtype and qclass.
    pub fn end(&self) -> usize {
        self.name_end + 4
    }
}

/// Read the first question, which must be uncompressed.
pub fn parse_question(buf: &[u8]) -> Result<Question, WireError> {
    let h = Header::parse(buf)?;
    if h.qdcount == 0 {
        return Err(WireError::NoQuestion);
    }
    let mut pos = HEADER_LEN;
    loop {
        let len = *buf.get(pos).ok_or(WireError::Truncated)? as usize;
        if len & 0xc0 != 0 {
            return Err(if len & 0xc0 == 0xc0 {
                WireError::BadPointer
            } else {
                WireError::BadLabel
            });
        }
        pos += 1 + len;
        if pos - HEADER_LEN > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        if len == 0 {
            break;
        }
    }
    if pos + 4 > buf.len() {
        return Err(WireError::Truncated);
    }
    Ok(Question {
        name_start: HEADER_LEN,
        name_end: pos,
        qtype: be16(buf, pos),
        qclass: be16(buf, pos + 2),
    })
}

/// The EDNS(0) OPT record of a message (RFC 6891 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Edns {
    /// Offset of the OPT RR's owner name and its total length in bytes.
    pub start: usize,
    pub len: usize,
    pub udp_size: u16,
    pub ext_rcode: u8,
    pub version: u8,
    pub flags: u16,
}

impl Edns {
    pub fn dnssec_ok(&self) -> bool {
        self.flags & EDNS_FLAG_DO != 0
    }
}

/// A client query, checked for what the proxy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryView {
    pub header: Header,
    pub question: Question,
    pub edns: Option<Edns>,
}

impl QueryView {
    /// The largest UDP response the client accepts (RFC 6891 §6.2.5: values below 512 mean 512).
    pub fn max_udp_response(&self) -> usize {
        match self.edns {
            Some(e) => e.udp_size.max(PLAIN_UDP_SIZE) as usize,
            None => PLAIN_UDP_SIZE as usize,
        }
    }
    pub fn dnssec_ok(&self) -> bool {
        self.edns.map(|e| e.dnssec_ok()).unwrap_or(false)
    }
    pub fn checking_disabled(&self) -> bool {
        self.header.flags & FLAG_CD != 0
    }
}

/// Why a query is not forwarded as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryProblem {
    /// Unreadable: answer FORMERR if a header could be read, otherwise drop.
    Malformed(WireError),
    /// A response, not a query: drop (answering would make loops and reflection).
    NotAQuery,
    /// Readable, but its OPT breaks the rules (several, not owned by the root, outside the
    /// additional section): answer FORMERR with the question and, since the problem is the
    /// OPT, ours (RFC 6891 §7). The view's OPT is the first one read.
    BadOpt(QueryView, WireError),
}

/// Parse a client query: header, exactly one question, and any OPT in the additional section.
pub fn parse_query(buf: &[u8]) -> Result<QueryView, QueryProblem> {
    let header = Header::parse(buf).map_err(QueryProblem::Malformed)?;
    if header.is_response() {
        return Err(QueryProblem::NotAQuery);
    }
    // RFC 9619: QDCOUNT must be 1 in queries with opcode QUERY.
    if header.qdcount > 1 {
        return Err(QueryProblem::Malformed(WireError::SeveralQuestions));
    }
    let question = parse_question(buf).map_err(QueryProblem::Malformed)?;
    let mut edns = None;
    let mut bad_opt = None;
    if header.ancount != 0 || header.nscount != 0 || header.arcount != 0 {
        let mut pos = question.end();
        let total = header.ancount as usize + header.nscount as usize + header.arcount as usize;
        let first_additional = header.ancount as usize + header.nscount as usize;
        // Every record is read (an unreadable one makes the whole query unreadable); the first
        // rule an OPT breaks is the one reported.
        for i in 0..total {
            let rr = read_rr(buf, pos).map_err(QueryProblem::Malformed)?;
            if rr.rtype == TYPE_OPT {
                let broken = if edns.is_some() {
                    Some(WireError::SeveralOpt) // RFC 6891 §6.1.1: FORMERR, MUST
                } else if buf[pos] != 0 {
                    Some(WireError::OptOwner)
                } else if i < first_additional {
                    Some(WireError::OptPlacement)
                } else {
                    None
                };
                bad_opt = bad_opt.or(broken);
                edns.get_or_insert(rr.as_edns(buf, pos));
            }
            pos = rr.end;
        }
    }
    let view = QueryView {
        header,
        question,
        edns,
    };
    match bad_opt {
        Some(e) => Err(QueryProblem::BadOpt(view, e)),
        None => Ok(view),
    }
}

/// One resource record's fixed fields.
#[derive(Debug, Clone, Copy)]
struct Rr {
    rtype: u16,
    /// Offset of the TTL field.
    ttl_at: usize,
    rdata_at: usize,
    end: usize,
}

impl Rr {
    fn as_edns(&self, buf: &[u8], start: usize) -> Edns {
        Edns {
            start,
            len: self.end - start,
            udp_size: be16(buf, self.ttl_at - 2),
            ext_rcode: buf[self.ttl_at],
            version: buf[self.ttl_at + 1],
            flags: be16(buf, self.ttl_at + 2),
        }
    }
}

fn read_rr(buf: &[u8], at: usize) -> Result<Rr, WireError> {
    let (pos, _) = skip_name(buf, at)?;
    if pos + 10 > buf.len() {
        return Err(WireError::Truncated);
    }
    let rtype = be16(buf, pos);
    let rdlen = be16(buf, pos + 8) as usize;
    let end = pos + 10 + rdlen;
    if end > buf.len() {
        return Err(WireError::Truncated);
    }
    Ok(Rr {
        rtype,
        ttl_at: pos + 4,
        rdata_at: pos + 10,
        end,
    })
}

/// What the cache and the tracker need from a response, gathered in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub header: Header,
    pub question: Option<Question>,
    /// RCODE with the OPT extension applied (RFC 6891 §6.1.3).
    pub rcode: u16,
    pub edns: Option<Edns>,
    /// Offsets of every TTL field except OPT's (which holds EDNS flags, not a TTL).
    pub ttl_offsets: Vec<u16>,
    /// Smallest TTL over the answer section, when it has records.
    pub min_answer_ttl: Option<u32>,
    /// RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM) of the authority SOA.
    pub negative_ttl: Option<u32>,
    /// Offset of the additional section (the message's end when it is empty).
    pub additional_start: usize,
    /// Offset of the authority section.
    pub authority_start: usize,
    /// The authority section has records and every one is NS (or its RRSIG): the extra of a
    /// positive answer, which a reply may leave out (RFC 2181 §9), unlike the SOA of a negative
    /// answer (RFC 2308 §3) or the NSEC/NSEC3 proofs DNSSEC needs (RFC 4035 §3.1.3).
    pub authority_only_ns: bool,
    /// The OPT carries an EDNS Client Subnet option with a non-zero scope: the answer was
    /// tailored to one client's network (RFC 7871 §7.3) and must not be shared.
    pub ecs_scoped: bool,
}

impl ResponseInfo {
    /// NOERROR with no answer records: NODATA (RFC 2308 §2.2).
    pub fn is_nodata(&self) -> bool {
        self.rcode == RCODE_NOERROR as u16 && self.header.ancount == 0
    }
}

/// Parse a whole response, checking every record so a cached copy can be patched blindly later.
pub fn parse_response(buf: &[u8]) -> Result<ResponseInfo, WireError> {
    let header = Header::parse(buf)?;
    if header.qdcount > 1 {
        return Err(WireError::SeveralQuestions);
    }
    let question = if header.qdcount == 1 {
        Some(parse_question(buf)?)
    } else {
        None
    };
    let mut pos = question.map(|q| q.end()).unwrap_or(HEADER_LEN);
    let mut ttl_offsets = Vec::with_capacity(
        (header.ancount as usize + header.nscount as usize + header.arcount as usize).min(64),
    );
    let mut min_answer_ttl: Option<u32> = None;
    let mut negative_ttl = None;
    let mut edns = None;
    let mut ecs_scoped = false;
    let an = header.ancount as usize;
    let ns = header.nscount as usize;
    let total = an + ns + header.arcount as usize;
    let mut additional_start = None;
    let mut authority_start = None;
    let mut authority_only_ns = ns > 0;
    for i in 0..total {
        if i == an {
            authority_start = Some(pos);
        }
        if i == an + ns {
            additional_start = Some(pos);
        }
        let rr = read_rr(buf, pos)?;
        // NS, or the RRSIG over it (the type covered opens its RDATA, RFC 4034 §3.1).
        if i >= an
            && i < an + ns
            && rr.rtype != TYPE_NS
            && !(rr.rtype == TYPE_RRSIG
                && rr.rdata_at + 2 <= rr.end
                && be16(buf, rr.rdata_at) == TYPE_NS)
        {
            authority_only_ns = false;
        }
        if rr.rtype == TYPE_OPT && i >= an + ns {
            if edns.is_some() {
                return Err(WireError::SeveralOpt);
            }
            edns = Some(rr.as_edns(buf, pos));
            ecs_scoped = ecs_scope_nonzero(&buf[rr.rdata_at..rr.end]);
        } else {
            let ttl = read_ttl(buf, rr.ttl_at);
            if rr.ttl_at <= u16::MAX as usize {
                ttl_offsets.push(rr.ttl_at as u16);
            }
            if i < an {
                min_answer_ttl = Some(min_answer_ttl.map_or(ttl, |m| m.min(ttl)));
            } else if i < an + ns && rr.rtype == TYPE_SOA {
                // SOA RDATA: mname, rname, then serial refresh retry expire minimum.
                let (p, _) = skip_name(buf, rr.rdata_at)?;
                let (p, _) = skip_name(buf, p)?;
                if p + 20 > rr.end {
                    return Err(WireError::Truncated);
                }
                let minimum = read_ttl(buf, p + 16);
                negative_ttl = Some(ttl.min(minimum));
            }
        }
        pos = rr.end;
    }
    let rcode = header.rcode() as u16 | edns.map(|e| (e.ext_rcode as u16) << 4).unwrap_or(0);
    Ok(ResponseInfo {
        header,
        question,
        rcode,
        edns,
        ttl_offsets,
        min_answer_ttl,
        negative_ttl,
        additional_start: additional_start.unwrap_or(pos),
        authority_start: authority_start.unwrap_or(pos),
        authority_only_ns,
        ecs_scoped,
    })
}

/// Where the message in `buf` ends: just past the last record its counts announce. Bytes
/// after it belong to no section (RFC 1035 §4.1). Not a field of `ResponseInfo`, which every
/// waiting query's future holds several copies of (`WAITING_OVERHEAD`).
pub fn message_end(buf: &[u8]) -> Result<usize, WireError> {
    let header = Header::parse(buf)?;
    let mut pos = HEADER_LEN;
    for _ in 0..header.qdcount {
        pos = skip_name(buf, pos)?.0 + 4;
    }
    if pos > buf.len() {
        return Err(WireError::Truncated);
    }
    let records = header.ancount as usize + header.nscount as usize + header.arcount as usize;
    for _ in 0..records {
        pos = read_rr(buf, pos)?.end;
    }
    Ok(pos)
}

/// How many records of `rtype` the answer section of `buf` (a response that parsed) holds:
/// a CNAME chain that ends in NODATA has answers, but none of the asked type.
pub fn answers_of_type(buf: &[u8], rtype: u16) -> Result<u16, WireError> {
    let header = Header::parse(buf)?;
    let mut pos = HEADER_LEN;
    for _ in 0..header.qdcount {
        pos = skip_name(buf, pos)?.0 + 4;
    }
    let mut n = 0;
    for _ in 0..header.ancount {
        let rr = read_rr(buf, pos)?;
        if rr.rtype == rtype {
            n += 1;
        }
        pos = rr.end;
    }
    Ok(n)
}

/// Whether the message's OPT (from `parse_query` or `parse_response`) carries an EDNS Client
/// Subnet option (RFC 7871): an answer to it may be tailored to that client's network. An ECS
/// option cut short by the end of the RDATA counts too: such a query is not shared.
pub fn has_ecs_option(buf: &[u8], edns: Option<Edns>) -> bool {
    let Some(e) = edns else { return false };
    let Ok(rr) = read_rr(buf, e.start) else {
        return false;
    };
    edns_options(&buf[rr.rdata_at..rr.end]).any(|(code, _)| code == EDNS_OPTION_ECS)
}

/// Whether OPT RDATA holds a whole ECS option whose SCOPE PREFIX-LENGTH (RFC 7871 §6, the
/// fourth byte) is not zero.
fn ecs_scope_nonzero(rdata: &[u8]) -> bool {
    edns_options(rdata).any(|(code, data)| {
        code == EDNS_OPTION_ECS && data.is_some_and(|d| d.len() >= 4 && d[3] != 0)
    })
}

/// The options of OPT RDATA, a sequence of {code, length, data} (RFC 6891 §6.1.2): each code
/// with its data, `None` for an option whose length runs past the RDATA (the last one yielded).
fn edns_options(mut rdata: &[u8]) -> impl Iterator<Item = (u16, Option<&[u8]>)> {
    std::iter::from_fn(move || {
        if rdata.len() < 4 {
            return None;
        }
        let (code, len) = (be16(rdata, 0), be16(rdata, 2) as usize);
        match rdata.get(4..4 + len) {
            Some(data) => {
                rdata = &rdata[4 + len..];
                Some((code, Some(data)))
            }
            None => {
                rdata = &[];
                Some((code, None))
            }
        }
    })
}

/// A TTL field: RFC 2181 §8, a value with the most significant bit set is read as zero.
#[inline]
fn read_ttl(buf: &[u8], at: usize) -> u32 {
    let t = be32(buf, at);
    if t & 0x8000_0000 != 0 {
        0
    } else {
        t
    }
}

/// Set the ID of a message in place.
#[inline]
pub fn set_id(buf: &mut [u8], id: u16) {
    buf[0..2].copy_from_slice(&id.to_be_bytes());
}

/// Overwrite every TTL at `offsets` with `ttl`-style values computed by `f(old)`.
#[inline]
pub fn rewrite_ttls(buf: &mut [u8], offsets: &[u16], mut f: impl FnMut(u32) -> u32) {
    for &o in offsets {
        let o = o as usize;
        let old = read_ttl(buf, o);
        buf[o..o + 4].copy_from_slice(&f(old).to_be_bytes());
    }
}

/// Same name, compared the DNS way: ASCII case-insensitive (RFC 4343).
#[inline]
pub fn names_equal(a: &[u8], b: &[u8]) -> bool {
    // Stubs ask in one case, so the same bytes (one memcmp) are the usual match; 0x20-style
    // mixed case (RFC 4343: case-insensitive) takes the byte-wise comparison.
    a == b || (a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y)))
}

/// Build an answer with only header, the question and (when the query had EDNS) our OPT:
/// the form of FORMERR, SERVFAIL, REFUSED, NOTIMP, and of a truncated (TC) reply
/// (RFC 1035 §4.1.1, RFC 6891 §7 for FORMERR to EDNS queries).
pub fn minimal_response(query: &[u8], q: &QueryView, rcode: u8, tc: bool, out: &mut Vec<u8>) {
    minimal_response_ext(query, q, rcode as u16, tc, out)
}

/// `minimal_response` with an extended `rcode` (above 15, e.g. BADVERS): its upper eight bits
/// go into the OPT (RFC 6891 §6.1.3), which a query without EDNS cannot receive.
pub fn minimal_response_ext(query: &[u8], q: &QueryView, rcode: u16, tc: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&query[..q.question.end()]);
    let mut flags =
        (q.header.flags & (FLAG_RD | FLAG_CD | 0x7800)) | FLAG_QR | FLAG_RA | (rcode & 0xf);
    if tc {
        flags |= FLAG_TC;
    }
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..12].fill(0);
    if let Some(e) = q.edns {
        push_opt_with_rcode(out, e.dnssec_ok(), rcode);
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
}

/// An answer to a query whose question could not be read: header only, FORMERR (RFC 1035 §4.1.1).
/// Returns false when not even a header could be read (the packet is dropped).
pub fn formerr_header_only(query: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(h) = Header::parse(query) else {
        return false;
    };
    out.clear();
    out.extend_from_slice(&h.id.to_be_bytes());
    let flags = (h.flags & (FLAG_RD | 0x7800)) | FLAG_QR | FLAG_RA | RCODE_FORMERR as u16;
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    true
}

/// The query as the proxy asks it upstream. The proxy is a hop of its own (RFC 6891 §6.1.1: an
/// OPT is per hop) and shares the answer with every client of the same key, so what goes on is
/// what the key and the tailoring allow, never one client's private state:
/// - the client's ID, opcode, CD and question (its case: the reply is matched on it);
/// - RD as `rd`: the caller's choice (an answer to be shared asks for recursion);
/// - AD set: a validating upstream then says whether the data is authenticated whoever asked
///   first (RFC 6840 §5.7); `Answer::render` shows AD only to clients that asked with AD or DO;
/// - with `edns` and a client that spoke EDNS, our OPT: our UDP size (not the client's, which
///   may invite fragments), version 0, the client's DO, and of its options only a whole Client
///   Subnet option (RFC 7871), never its cookie (RFC 7873: a server cookie is per server),
///   padding, NSID or unknown options. Without `edns` no OPT: the retry for an upstream that
///   answers EDNS with FORMERR (RFC 6891 §7);
/// - no answer or authority records, and no other additional records.
pub fn upstream_query(query: &[u8], q: &QueryView, rd: bool, edns: bool) -> Vec<u8> {
    let qend = q.question.end();
    let mut out = Vec::with_capacity(qend + 11 + 24);
    out.extend_from_slice(&query[..qend]);
    let mut flags = (q.header.flags & (0x7800 | FLAG_CD)) | FLAG_AD;
    if rd {
        flags |= FLAG_RD;
    }
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..12].fill(0);
    let Some(e) = q.edns.filter(|_| edns) else {
        return out;
    };
    let ecs = read_rr(query, e.start).ok().and_then(|rr| {
        edns_options(&query[rr.rdata_at..rr.end])
            .find_map(|(code, data)| (code == EDNS_OPTION_ECS).then_some(data).flatten())
    });
    push_opt(&mut out, e.dnssec_ok());
    if let Some(data) = ecs {
        let rdlen = 4 + data.len();
        let at = out.len() - 2;
        out[at..].copy_from_slice(&(rdlen as u16).to_be_bytes());
        out.extend_from_slice(&EDNS_OPTION_ECS.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    out[10..12].copy_from_slice(&1u16.to_be_bytes());
    out
}

/// Append our OPT pseudo-RR: root owner, our UDP size, no options (RFC 6891 §6.1.2).
pub fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool) {
    push_opt_with_rcode(out, dnssec_ok, 0);
}

/// Our OPT carrying the upper eight bits of an extended `rcode` (RFC 6891 §6.1.3); version 0,
/// the only one we implement.
pub fn push_opt_with_rcode(out: &mut Vec<u8>, dnssec_ok: bool, rcode: u16) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    out.extend_from_slice(&[(rcode >> 4) as u8, 0]); // extended rcode, version 0
    out.extend_from_slice(&(if dnssec_ok { EDNS_FLAG_DO } else { 0 }).to_be_bytes());
    out.extend_from_slice(&[0, 0]); // rdlen
}

/// Build a query for `name`/`qtype` with the given ID (RD set, our OPT when `edns`).
pub fn build_query(
    id: u16,
    name: &str,
    qtype: u16,
    edns: bool,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, if edns { 1 } else { 0 }]);
    encode_name(name, out)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if edns {
        push_opt(out, false);
    }
    Ok(())
}

/// The eight bytes of `w` with ASCII `A`-`Z` lowercased and every other byte as it was: DNS
/// names compare case-insensitively in ASCII only (RFC 4343), and the cache key, the capture
/// pairing and the walk tracker hash names a word at a time.
#[inline]
pub fn ascii_lowercase_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    // Each byte's low seven bits plus a constant sets its top bit (no carry out of the byte:
    // 0x7f + 0x3f < 0x100) exactly when they are at least `A`, or above `Z`.
    let low7 = w & !HIGH;
    let from_a = low7 + ONES * (0x80 - b'A' as u64);
    let past_z = low7 + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = from_a & !past_z & !w & HIGH;
    w | (upper >> 2)
}

/// The last `name.len() % 8` bytes of `name` (the part after its whole words; not none) as a
/// little-endian word padded with zeros, for the name hashes that read a word at a time.
/// Read as one overlapping load, not copied into a buffer and read back: that read waits for
/// the copy's stores, and with them every store before (a name just written to a line
/// another thread had), which `perf annotate` showed as most of the capture pairing's key.
#[inline]
pub fn tail_word(name: &[u8]) -> u64 {
    let n = name.len() % 8;
    debug_assert!(n != 0);
    if name.len() >= 8 {
        let w = u64::from_le_bytes(name[name.len() - 8..].try_into().unwrap_or_default());
        w >> (8 * (8 - n))
    } else {
        name.iter()
            .rev()
            .take(n)
            .fold(0u64, |w, &b| (w << 8) | b as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `message_end` stops at the last record the counts announce, whatever follows, and
    /// reads every prefix of a message without a panic (an error for each cut short).
    #[test]
    fn the_message_ends_with_its_last_record_not_with_the_buffer() {
        // example. A: 192.0.2.1, then junk.
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x07example\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]);
        let end = m.len();
        m.extend_from_slice(b"\x01\x02\x03\x04garbage");
        assert_eq!(message_end(&m), Ok(end));
        assert!(parse_response(&m).is_ok());
        for cut in 0..end {
            assert!(message_end(&m[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// The tail read as one overlapping load is the zero-padded copy of the last bytes, for
    /// every length.
    #[test]
    fn a_names_tail_word_is_its_last_bytes_zero_padded() {
        let bytes: Vec<u8> = (1..=40u8).map(|b| b.wrapping_mul(37)).collect();
        for len in 1..=bytes.len() {
            let name = &bytes[..len];
            let n = len % 8;
            if n == 0 {
                continue;
            }
            let mut last = [0u8; 8];
            last[..n].copy_from_slice(&name[len - n..]);
            assert_eq!(tail_word(name), u64::from_le_bytes(last), "length {len}");
        }
    }

    #[test]
    fn a_word_is_lowercased_as_each_of_its_bytes() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = [b'Q', b'a', 0x80, b'Z', b'@', b'[', 0xc1, b'A'];
                bytes[at] = b;
                let want = bytes.map(|c| c.to_ascii_lowercase());
                let got = ascii_lowercase_word(u64::from_le_bytes(bytes)).to_le_bytes();
                assert_eq!(got, want, "byte {b:#x} at {at}");
            }
        }
    }

    fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
        let mut v = Vec::new();
        build_query(0x1234, name, qtype, edns, &mut v).unwrap();
        v
    }

    /// A query whose OPT RDATA is `options` (RFC 6891 §6.1.2), as raw bytes.
    fn query_with_options(options: &[u8]) -> Vec<u8> {
        let mut q = query("www.example.", TYPE_A, true);
        // build_query's OPT is last and has no RDATA: its RDLENGTH is the final two bytes.
        let n = q.len();
        q[n - 2..].copy_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
        q
    }

    #[test]
    fn ecs_options_are_found_after_others_and_when_cut_short() {
        // A cookie (10), then ECS (8): family 1, source /24, scope /24, 198.51.100.
        let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let ecs = [0, 8, 0, 7, 0, 1, 24, 24, 198, 51, 100];
        let both = [&cookie[..], &ecs[..]].concat();
        let has = |options: &[u8]| {
            let q = query_with_options(options);
            has_ecs_option(&q, parse_query(&q).unwrap().edns)
        };
        assert!(has(&both));
        assert!(ecs_scope_nonzero(&both));
        assert!(!has(&cookie));
        assert!(!ecs_scope_nonzero(&cookie));
        // Scope 0: the answer is for every network (RFC 7871 §7.2.1).
        let scope0 = [0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100];
        assert!(has(&scope0));
        assert!(!ecs_scope_nonzero(&scope0));
        // An ECS option whose length runs past the RDATA: the query is still kept apart, but
        // no scope is read from it.
        let cut = &both[..both.len() - 2];
        assert!(has(cut));
        assert!(!ecs_scope_nonzero(cut));
        // A malformed option before ECS hides it from both.
        let bad_first = [&[0, 10, 0, 200, 1][..], &ecs[..]].concat();
        assert!(!ecs_scope_nonzero(&bad_first));
        assert!(!has(&bad_first));
    }

    #[test]
    fn parses_a_plain_query() {
        let q = query("Api.GitHub.com.", TYPE_A, false);
        let v = parse_query(&q).unwrap();
        assert_eq!(v.header.id, 0x1234);
        assert_eq!(v.question.qtype, TYPE_A);
        assert_eq!(
            name_to_string(&q, v.question.name_start).unwrap(),
            "api.github.com."
        );
        assert!(v.edns.is_none());
        assert_eq!(v.max_udp_response(), 512);
    }

    #[test]
    fn reads_edns_size_and_do() {
        let mut q = query("a.b.", TYPE_AAAA, true);
        let n = q.len();
        q[n - 4] |= 0x80; // set DO in the OPT flags
        let v = parse_query(&q).unwrap();
        let e = v.edns.unwrap();
        assert_eq!(e.udp_size, EDNS_UDP_SIZE);
        assert!(v.dnssec_ok());
        assert_eq!(v.max_udp_response(), 1232);
    }

    #[test]
    fn rejects_what_it_must() {
        assert_eq!(
            parse_query(&[0; 5]),
            Err(QueryProblem::Malformed(WireError::ShortHeader))
        );
        let mut q = query("a.", TYPE_A, false);
        q[2] |= 0x80;
        assert_eq!(parse_query(&q), Err(QueryProblem::NotAQuery));
        let mut q = query("a.", TYPE_A, false);
        q[5] = 2;
        assert_eq!(
            parse_query(&q),
            Err(QueryProblem::Malformed(WireError::SeveralQuestions))
        );
        let q = query("abc.", TYPE_A, false);
        assert!(matches!(
            parse_query(&q[..q.len() - 2]),
            Err(QueryProblem::Malformed(WireError::Truncated))
        ));
        // A label that claims more bytes than there are.
        let mut q = query("abc.", TYPE_A, false);
        q[12] = 60;
        assert!(parse_query(&q).is_err());
    }

    #[test]
    fn pointer_loops_end_in_an_error() {
        // Name at 12 is a pointer to itself.
        let mut m = vec![0u8; 12];
        m[5] = 1;
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(skip_name(&m, 12), Err(WireError::BadPointer));
        // Two pointers pointing at each other.
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[0xc0, 14, 0xc0, 12]);
        assert_eq!(skip_name(&m, 14), Err(WireError::BadPointer));
    }

    #[test]
    fn long_names_are_refused() {
        let long = format!("{}.", vec!["a".repeat(63); 4].join("."));
        let mut out = Vec::new();
        assert_eq!(encode_name(&long, &mut out), Err(WireError::NameTooLong));
        assert!(out.is_empty());
    }

    #[test]
    fn escapes_odd_bytes() {
        let mut m = vec![0u8; 12];
        m.extend_from_slice(&[3, b'a', b'.', 0xff, 0]);
        assert_eq!(name_to_string(&m, 12).unwrap(), "a\\.\\255.");
        let root = [0u8; 13];
        assert_eq!(name_to_string(&root, 12).unwrap(), ".");
    }

    #[test]
    fn minimal_response_keeps_question_and_edns() {
        let q = query("x.y.", TYPE_A, true);
        let v = parse_query(&q).unwrap();
        let mut out = Vec::new();
        minimal_response(&q, &v, RCODE_SERVFAIL, false, &mut out);
        let r = parse_response(&out).unwrap();
        assert!(r.header.is_response());
        assert_eq!(r.rcode, RCODE_SERVFAIL as u16);
        assert_eq!(r.header.id, 0x1234);
        assert!(r.edns.is_some());
        assert_eq!(r.question.unwrap().qtype, TYPE_A);
    }
}

// ---------------------------------------------------------------------------------------------
// Additions for the capture readers (src/capture), kept in one block to ease merging.
// ---------------------------------------------------------------------------------------------

/// `name_to_string` for a first question that `parse_question` has already checked
/// (uncompressed, in bounds, at most 255 octets): the same text, without walking the name twice
/// or pushing `char`s. Capture readers format one name per query, millions per second.
pub fn question_name_to_string(buf: &[u8], q: &Question) -> String {
    let name = buf.get(q.name_start..q.name_end).unwrap_or(&[]);
    name_text_into(name, String::with_capacity(name.len() + 8))
}

/// `question_name_to_string` of a question's name bytes (uncompressed wire form, as
/// `Question::name_bytes` gives them), written into `into` after clearing it, so a caller
/// formatting many names reuses one allocation.
pub fn name_text_into(name: &[u8], into: String) -> String {
    let mut out = into.into_bytes();
    out.clear();
    // The whole labels: up to the root label, or to a label that runs past the bytes.
    let mut end = 0;
    while let Some(&len) = name.get(end) {
        if len == 0 || end + 1 + len as usize > name.len() {
            break;
        }
        end += 1 + len as usize;
    }
    if end > 0 {
        // The usual name, every byte plain: its text is its bytes after the first length byte,
        // lowercased through the table in one pass, each later length byte made a dot, and the
        // final dot. A byte to escape (0 in the table) takes `name_text_by_label`.
        out.extend_from_slice(&name[1..end]);
        out.push(b'.');
        for c in &mut out[..end - 1] {
            *c = PLAIN_LOWER[*c as usize];
        }
        let mut dot = name[0] as usize;
        while dot < end - 1 {
            out[dot] = b'.';
            dot += 1 + name[dot + 1] as usize;
        }
        // No byte to escape: no 0 in the table's output (a reduction the compiler vectorises).
        if out.iter().fold(u8::MAX, |m, &c| m.min(c)) != 0 {
            // SAFETY: table values, dots: ASCII (as below).
            return unsafe { String::from_utf8_unchecked(out) };
        }
    }
    name_text_by_label(name, out)
}

/// `name_text_into`'s general path: label by label, escaping, stopping at the root label or
/// at a label that runs past the end.
fn name_text_by_label(name: &[u8], mut out: Vec<u8>) -> String {
    out.clear();
    let mut pos = 0;
    while let Some(&len) = name.get(pos) {
        let Some(label) = name.get(pos + 1..pos + 1 + len as usize) else {
            break;
        };
        if len == 0 {
            break;
        }
        // The usual label: every byte plain, copied through the table (lowercased) in one
        // pass; the rare one with bytes to escape takes the slow path from the start.
        let at = out.len();
        out.extend_from_slice(label);
        let mut plain = true;
        for c in &mut out[at..] {
            let p = PLAIN_LOWER[*c as usize];
            plain &= p != 0;
            *c = p;
        }
        if !plain {
            out.truncate(at);
            for &c in label {
                let c = c.to_ascii_lowercase();
                match PLAIN_LOWER[c as usize] {
                    0 if c == b'.' || c == b'\\' => out.extend_from_slice(&[b'\\', c]),
                    0 => out.extend_from_slice(&[
                        b'\\',
                        b'0' + c / 100,
                        b'0' + (c / 10) % 10,
                        b'0' + c % 10,
                    ]),
                    p => out.push(p),
                }
            }
        }
        out.push(b'.');
        pos += 1 + len as usize;
    }
    if out.is_empty() {
        out.push(b'.');
    }
    debug_assert!(out.is_ascii());
    // SAFETY: every byte pushed above is ASCII (`PLAIN_LOWER`'s values, `.`, `\\` and
    // digits), so the bytes are UTF-8: asserted in debug builds, not re-validated per answer.
    unsafe { String::from_utf8_unchecked(out) }
}

/// For each octet: its lowercase form when it prints as itself in a name (letters, digits,
/// `-`, `_`, `*`, `/`), else 0 (escaped: `\.`, `\\`, `\DDD`).
static PLAIN_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*' | b'/' => b,
            b'A'..=b'Z' => b + 32,
            _ => 0,
        };
        c += 1;
    }
    t
};

#[cfg(test)]
mod capture_additions_tests {
    use super::*;

    #[test]
    fn question_name_to_string_matches_name_to_string() {
        let mut names: Vec<Vec<u8>> = vec![vec![0], vec![3, b'W', b'w', b'W', 0]];
        names.push(vec![4, b'a', b'.', b'\\', 0xff, 2, 0, b'Z', 0]);
        names.push(vec![3, b'a', b'-', b'_', 1, b'*', 3, b'x', b'/', b'9', 0]);
        names.push(vec![1, b' ', 0]);
        // The label runs past the name into the type: no question.
        names.push(vec![5, b'a', b'b', 0]);
        // Every byte value once, in a label of its own.
        names.extend((0..=255u8).map(|b| vec![2, b'x', b, 0]));
        names.push(
            (0..4)
                .flat_map(|i| std::iter::once(63u8).chain((0..63).map(move |j| (i * 63 + j) as u8)))
                .chain([0])
                .take(255)
                .collect(),
        );
        // Cut short anywhere (the proxy hands over checked names; the function takes any).
        let long = names.last().unwrap().clone();
        for n in 0..long.len() {
            let cut = &long[..n];
            let text = name_text_into(cut, String::new());
            let mut whole = cut.to_vec();
            // The text of the labels that are whole: the same name ended there.
            let mut end = 0;
            while end < cut.len() && end + 1 + cut[end] as usize <= cut.len() && cut[end] != 0 {
                end += 1 + cut[end] as usize;
            }
            whole.truncate(end);
            whole.push(0);
            assert_eq!(text, name_to_string(&whole, 0).unwrap(), "cut at {n}");
        }
        for n in names {
            let mut m = vec![0u8, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&n);
            m.extend_from_slice(&[0, 1, 0, 1]);
            let Ok(q) = parse_question(&m) else { continue };
            assert_eq!(
                question_name_to_string(&m, &q),
                name_to_string(&m, q.name_start).unwrap()
            );
        }
    }

    /// The one-pass path of `name_text_into` gives what the label-by-label path gives, on
    /// names and on bytes that are not one (a zero label inside, a label past the end, odd
    /// bytes), and reuses its buffer's old contents for nothing.
    #[test]
    fn name_text_into_matches_the_label_by_label_path() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"abcXYZ09-_*/.\\ \x00\xff";
        let mut checked = 0;
        for round in 0..20_000 {
            let mut name = Vec::new();
            if round % 4 == 0 {
                // Any bytes.
                for _ in 0..next() % 24 {
                    name.push(next() as u8 % 12);
                }
            } else {
                for _ in 0..next() % 5 {
                    let len = (next() % 9) as u8;
                    name.push(len);
                    for _ in 0..len {
                        name.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                    }
                }
                name.push(0);
                match round % 4 {
                    1 => {
                        let cut = (next() as usize) % name.len();
                        name.truncate(cut); // short
                    }
                    2 => name.extend_from_slice(&[3, b'a', b'b', b'c', 0]), // after the root
                    _ => {}
                }
            }
            let reused = String::from("stale text that must not show");
            let fast = name_text_into(&name, reused);
            assert_eq!(fast, name_text_by_label(&name, Vec::new()), "{name:?}");
            checked += 1;
        }
        assert_eq!(checked, 20_000);
    }

    #[test]
    fn response_rcode_matches_parse_response() {
        let mut query = Vec::new();
        build_query(7, "a.b.", TYPE_A, true, &mut query).unwrap();
        let v = parse_query(&query).unwrap();
        let mut r = Vec::new();
        minimal_response(&query, &v, RCODE_NXDOMAIN, false, &mut r);
        let q = parse_question(&r).unwrap();
        assert_eq!(
            response_rcode(&r, &q),
            Some(parse_response(&r).unwrap().rcode)
        );
        // BADVERS: extended rcode 1 in the OPT, header rcode 0 (RFC 6891 §6.1.3) = 16.
        let n = r.len();
        r[3] &= 0xf0;
        r[n - 6] = 1;
        assert_eq!(response_rcode(&r, &q), Some(16));
        assert_eq!(
            response_rcode(&r, &q),
            Some(parse_response(&r).unwrap().rcode)
        );
        assert_eq!(response_rcode(&r[..n - 3], &q), None);
    }
}

/// The RCODE of a response with its EDNS extension (RFC 6891 §6.1.3), reading only what that
/// needs: the records are skipped by their lengths up to the OPT in the additional section.
/// `q` is the message's checked first question. `None` when a record does not parse.
pub fn response_rcode(buf: &[u8], q: &Question) -> Option<u16> {
    let h = Header::parse(buf).ok()?;
    let mut pos = q.end();
    let before_additional = h.ancount as usize + h.nscount as usize;
    // Start past the questions: the first was checked; any further ones (qdcount > 1 is
    // malformed but seen) are skipped like names.
    for _ in 1..h.qdcount {
        pos = skip_name(buf, pos).ok()?.0 + 4;
    }
    let mut ext = 0u16;
    for i in 0..before_additional + h.arcount as usize {
        let rr = read_rr(buf, pos).ok()?;
        if i >= before_additional && rr.rtype == TYPE_OPT {
            ext = (buf[rr.ttl_at] as u16) << 4;
        }
        pos = rr.end;
    }
    Some(h.rcode() as u16 | ext)
}
