//! `node_local.firewall` (issue 17): ACCEPT rules for DNS to and from the node-local addresses
//! at the head of the host's filter `INPUT` and `OUTPUT` chains, as NodeLocal DNSCache adds
//! them (`-p udp -d 169.254.20.10 --dport 53 -j ACCEPT` and friends).
//!
//! Why in the host's chains and not in our own nftables table: a packet is dropped if *any*
//! base chain on its hook drops it, so an accept in `inet ndots` cannot override the DROP
//! policy of a hardened node's `filter INPUT`. And the NOTRACK table makes the answers
//! untracked, so the usual `ESTABLISHED,RELATED` accept does not match them either.
//!
//! Both iptables backends are handled, whichever exist, IPv4 and IPv6 (a node can have both:
//! a packet then crosses both, and either can drop it):
//!
//! - **nft** (iptables-nft, the default on current distributions): the tables `ip filter` and
//!   `ip6 filter` that iptables-nft manages, over nfnetlink. Each rule is written the way
//!   iptables-nft writes it (native `meta l4proto`, `payload` and `cmp`, a counter, `accept`)
//!   and carries a comment `ndots node-local: ...` in its user data, so `iptables-nft -S` and
//!   `nft list ruleset` both show it and ours are found again by their comment.
//! - **legacy** (iptables-legacy, e.g. Container-Optimized OS): the x_tables `filter` table,
//!   read with `getsockopt(IPT_SO_GET_ENTRIES)` and replaced whole with
//!   `setsockopt(IPT_SO_SET_REPLACE)`, as libiptc does; there is no other interface to it. The
//!   scratch image has no `iptables` binary, so the proxy speaks this ABI itself
//!   (linux/netfilter_ipv4/ip_tables.h; layouts below). Our entries are found by their exact
//!   content. The table is only replaced when a rule is missing, under `/run/xtables.lock` when
//!   that file is there (the DaemonSet mounts it from the host, as kube-proxy does), and the
//!   other rules' counters are carried over (`IPT_SO_SET_ADD_COUNTERS`).
//!
//! A backend whose table or chain does not exist is left alone: nothing there can drop.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context};

use crate::config::NodeLocalConfig;
use crate::netlink::{attrs, errno_text, Message, Socket, NLM_F_CREATE};
use crate::node_local::{cmp_eq, meta, payload, Side};

/// Every comment of ours starts with this; teardown removes what carries it.
pub const COMMENT_PREFIX: &str = "ndots node-local";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Chain {
    Input,
    Output,
}

impl Chain {
    fn name(self) -> &'static str {
        match self {
            Chain::Input => "INPUT",
            Chain::Output => "OUTPUT",
        }
    }

    /// NF_INET_LOCAL_IN / NF_INET_LOCAL_OUT: the index into a table's hook_entry.
    fn hook(self) -> usize {
        match self {
            Chain::Input => 1,
            Chain::Output => 3,
        }
    }
}

/// One ACCEPT rule: `-p PROTO {-d ADDR --dport | -s ADDR --sport} PORT -j ACCEPT` in `chain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    pub addr: IpAddr,
    pub proto: u8,
    pub port: u16,
    pub side: Side,
}

impl Rule {
    fn comment(&self) -> String {
        let proto = if self.proto == libc::IPPROTO_UDP as u8 {
            "udp"
        } else {
            "tcp"
        };
        let (dir, port) = match self.side {
            Side::To => ("to", "dport"),
            Side::From => ("from", "sport"),
        };
        format!(
            "{COMMENT_PREFIX}: {proto} {dir} {} {port} {}",
            self.addr, self.port
        )
    }
}

/// The rules for a node-local setup. INPUT: queries to the address (from pods and the node)
/// and answers from it to clients on the node itself (hostNetwork pods, the liveness probe);
/// OUTPUT: answers leaving it and the node's own queries to it. DNS over UDP and TCP; the
/// admin port over TCP when the admin listener serves on the addresses.
pub fn rules(cfg: &NodeLocalConfig) -> Vec<Rule> {
    let udp = libc::IPPROTO_UDP as u8;
    let tcp = libc::IPPROTO_TCP as u8;
    let mut ports = vec![(udp, cfg.port), (tcp, cfg.port)];
    if let Some(p) = cfg.admin_port {
        ports.push((tcp, p));
    }
    let mut out = Vec::new();
    for &addr in &cfg.addresses {
        for chain in [Chain::Input, Chain::Output] {
            for side in [Side::To, Side::From] {
                for &(proto, port) in &ports {
                    out.push(Rule {
                        chain,
                        addr,
                        proto,
                        port,
                        side,
                    });
                }
            }
        }
    }
    out
}

/// Put every rule in place where it is missing, in every backend that exists. Returns how many
/// rules were (re)loaded: 0 when everything was already there.
pub fn ensure(cfg: &NodeLocalConfig) -> anyhow::Result<usize> {
    let want = rules(cfg);
    let mut loaded = nft_sync(&want, false)?;
    for v6 in [false, true] {
        loaded += legacy_sync(&want, v6, false)?;
    }
    Ok(loaded)
}

/// Remove our rules from every backend: in nft every rule with our comment, in legacy every
/// entry equal to one `cfg` would add. Returns how many were removed.
pub fn remove(cfg: &NodeLocalConfig) -> anyhow::Result<usize> {
    let want = rules(cfg);
    let mut removed = nft_sync(&want, true)?;
    for v6 in [false, true] {
        removed += legacy_sync(&want, v6, true)?;
    }
    Ok(removed)
}

fn is_family(addr: IpAddr, v6: bool) -> bool {
    addr.is_ipv6() == v6
}

/// The address bytes and their offset in the network header, and the port's offset in the
/// transport header (UDP and TCP alike), for a rule's side.
fn header_offsets(addr: IpAddr, side: Side) -> (Vec<u8>, u32, u32) {
    match (addr, side) {
        // IPv4 header: saddr at 12, daddr at 16. IPv6: saddr at 8, daddr at 24.
        (IpAddr::V4(a), Side::From) => (a.octets().to_vec(), 12, 0),
        (IpAddr::V4(a), Side::To) => (a.octets().to_vec(), 16, 2),
        (IpAddr::V6(a), Side::From) => (a.octets().to_vec(), 8, 0),
        (IpAddr::V6(a), Side::To) => (a.octets().to_vec(), 24, 2),
    }
}

// ---- nft backend: iptables-nft's `filter` tables over nfnetlink (linux/netfilter/nf_tables.h).

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// libnftnl's user-data TLV type for a rule comment (NFTNL_UDATA_RULE_COMMENT).
const UDATA_RULE_COMMENT: u8 = 0;
/// iptables-nft's table name.
const FILTER: &str = "filter";

fn nft_msg(kind: u16, flags: u16, family: u8) -> Message {
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        &[family, 0, 0, 0],
    )
}

fn batch_marker(kind: u16) -> Message {
    Message::batch_marker(
        kind,
        &[libc::AF_UNSPEC as u8, 0, 0, NFNL_SUBSYS_NFTABLES as u8],
    )
}

/// Whether `table <family> filter` has the chain: where it does not, nothing there drops.
fn nft_chain_exists(sock: &mut Socket, family: u8, chain: Chain) -> anyhow::Result<bool> {
    let mut m = nft_msg(NFT_MSG_GETCHAIN, 0, family);
    m.attr_str(NFTA_CHAIN_TABLE, FILTER)
        .attr_str(NFTA_CHAIN_NAME, chain.name());
    match sock
        .send(vec![m])
        .context("netlink, looking up a chain")?
        .pop()
    {
        Some(Err(libc::ENOENT)) => Ok(false),
        Some(Err(e)) => bail!(
            "looking up chain {} of nftables table {FILTER}: {}",
            chain.name(),
            errno_text(e)
        ),
        _ => Ok(true),
    }
}

/// Our rules in a chain: (handle, comment).
fn nft_ours(sock: &mut Socket, family: u8, chain: Chain) -> anyhow::Result<Vec<(u64, String)>> {
    let mut m = Message::dump(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
        &[family, 0, 0, 0],
    );
    m.attr_str(NFTA_RULE_TABLE, FILTER)
        .attr_str(NFTA_RULE_CHAIN, chain.name());
    let msgs = match sock.dump(m).context("netlink, listing rules")? {
        Ok(msgs) => msgs,
        Err(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => bail!("listing nftables chain {}: {}", chain.name(), errno_text(e)),
    };
    let mut out = Vec::new();
    for msg in &msgs {
        // After the 4-byte nfgenmsg.
        let Some(body) = msg.get(4..) else { continue };
        let (mut handle, mut comment) = (None, None);
        for (kind, value) in attrs(body) {
            match kind {
                NFTA_RULE_HANDLE if value.len() == 8 => {
                    handle = Some(u64::from_be_bytes(value.try_into().unwrap()))
                }
                NFTA_RULE_USERDATA => comment = udata_comment(value),
                _ => {}
            }
        }
        if let (Some(h), Some(c)) = (handle, comment) {
            if c.starts_with(COMMENT_PREFIX) {
                out.push((h, c));
            }
        }
    }
    Ok(out)
}

/// The comment in a rule's user data (libnftnl TLVs: type, length, value).
fn udata_comment(mut data: &[u8]) -> Option<String> {
    while data.len() >= 2 {
        let (kind, len) = (data[0], data[1] as usize);
        let value = data.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        data = &data[2 + len..];
    }
    None
}

/// `-p P -d A --dport N -j ACCEPT` (or -s/--sport) as iptables-nft writes it, with our comment.
fn nft_rule(family: u8, r: &Rule) -> Message {
    let (addr, addr_offset, port_offset) = header_offsets(r.addr, r.side);
    let mut m = nft_msg(NFT_MSG_NEWRULE, NLM_F_CREATE, family);
    m.attr_str(NFTA_RULE_TABLE, FILTER)
        .attr_str(NFTA_RULE_CHAIN, r.chain.name())
        .nest(NFTA_RULE_EXPRESSIONS);
    meta(&mut m, NFT_META_L4PROTO);
    cmp_eq(&mut m, &[r.proto]);
    payload(
        &mut m,
        NFT_PAYLOAD_NETWORK_HEADER,
        addr_offset,
        addr.len() as u32,
    );
    cmp_eq(&mut m, &addr);
    payload(&mut m, NFT_PAYLOAD_TRANSPORT_HEADER, port_offset, 2);
    cmp_eq(&mut m, &r.port.to_be_bytes());
    m.nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "counter")
        .end_nest();
    m.nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "immediate")
        .nest(NFTA_EXPR_DATA)
        .attr_be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
        .nest(NFTA_IMMEDIATE_DATA)
        .nest(NFTA_DATA_VERDICT)
        .attr_be32(NFTA_VERDICT_CODE, NF_ACCEPT)
        .end_nest()
        .end_nest()
        .end_nest()
        .end_nest();
    m.end_nest();
    let comment = r.comment();
    let mut udata = vec![UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
    udata.extend_from_slice(comment.as_bytes());
    udata.push(0);
    m.attr(NFTA_RULE_USERDATA, &udata);
    m
}

/// Make each existing iptables-nft filter INPUT/OUTPUT chain hold exactly `want`'s rules for its
/// family (`remove`: none of ours). A chain whose rules are already right is not touched;
/// otherwise ours are deleted and the wanted ones inserted at its head, in one transaction.
fn nft_sync(want: &[Rule], remove: bool) -> anyhow::Result<usize> {
    let mut sock = Socket::open(libc::NETLINK_NETFILTER).context("opening an nfnetlink socket")?;
    let mut changed = 0;
    for (family, v6) in [(NFPROTO_IPV4, false), (NFPROTO_IPV6, true)] {
        for chain in [Chain::Input, Chain::Output] {
            if !nft_chain_exists(&mut sock, family, chain)? {
                continue;
            }
            let wanted: Vec<&Rule> = if remove {
                Vec::new()
            } else {
                want.iter()
                    .filter(|r| r.chain == chain && is_family(r.addr, v6))
                    .collect()
            };
            let have = nft_ours(&mut sock, family, chain)?;
            let mut have_c: Vec<&str> = have.iter().map(|(_, c)| c.as_str()).collect();
            let mut want_c: Vec<String> = wanted.iter().map(|r| r.comment()).collect();
            have_c.sort_unstable();
            want_c.sort_unstable();
            if have_c == want_c {
                continue;
            }
            let mut batch = vec![batch_marker(NFNL_MSG_BATCH_BEGIN)];
            for (handle, _) in &have {
                let mut m = nft_msg(NFT_MSG_DELRULE, 0, family);
                m.attr_str(NFTA_RULE_TABLE, FILTER)
                    .attr_str(NFTA_RULE_CHAIN, chain.name())
                    .attr(NFTA_RULE_HANDLE, &handle.to_be_bytes());
                batch.push(m);
            }
            // Each insert goes to the head: reversed, they end up in `want`'s order.
            for r in wanted.iter().rev() {
                batch.push(nft_rule(family, r));
            }
            batch.push(batch_marker(NFNL_MSG_BATCH_END));
            let results = sock
                .send(batch)
                .context("netlink, updating the filter rules")?;
            if let Some(Err(e)) = results
                .iter()
                .find(|r| matches!(r, Err(e) if *e != libc::ECANCELED))
            {
                bail!(
                    "updating nftables chain {} {FILTER} {}: {}",
                    if v6 { "ip6" } else { "ip" },
                    chain.name(),
                    errno_text(*e)
                );
            }
            changed += if remove { have.len() } else { wanted.len() };
        }
    }
    Ok(changed)
}

// ---- legacy backend: the x_tables `filter` table (linux/netfilter_ipv4/ip_tables.h,
// linux/netfilter_ipv6/ip6_tables.h, linux/netfilter/x_tables.h). Sizes are x86_64/arm64's
// and were checked against the headers with offsetof.
//
//   ipt_getinfo      name[32] valid_hooks hook_entry[5] underflow[5] num_entries size   (84)
//   ipt_get_entries  name[32] size, entries at 40
//   ipt_replace      name[32] valid_hooks num_entries size hook_entry[5] underflow[5]
//                    num_counters, counters* at 88, entries at 96
//   ipt_entry        ipt_ip (84) nfcache target_offset@88 next_offset@90 comefrom
//                    counters@96, matches at 112
//   ip6t_entry       ip6t_ip6 (136) nfcache target_offset@140 next_offset@142 comefrom
//                    counters@152, matches at 168
//   xt_entry_match / xt_entry_target: size u16, name[29], revision u8 (32), then data
//   xt_udp: spts[2] dpts[2] invflags (10 -> 16); xt_tcp: + option flg_mask flg_cmp (12 -> 16)
//   standard target: 32 + verdict i32 (40); ACCEPT is -NF_ACCEPT - 1 = -2; a verdict >= 0
//   is a jump to that offset.

const SO_SET_REPLACE: i32 = 64;
const SO_SET_ADD_COUNTERS: i32 = 65;
const SO_GET_INFO: i32 = 64;
const SO_GET_ENTRIES: i32 = 65;
const MATCH_SIZE: usize = 32 + 16;
const TARGET_SIZE: usize = 40;
const VERDICT_ACCEPT: i32 = -2;
const IP6T_F_PROTO: u8 = 0x01;
const XTABLES_LOCK: &str = "/run/xtables.lock";

struct Layout {
    v6: bool,
    level: i32,
    /// sizeof(ipt_entry) / sizeof(ip6t_entry).
    entry: usize,
    target_offset_at: usize,
}

impl Layout {
    fn new(v6: bool) -> Layout {
        if v6 {
            Layout {
                v6,
                level: libc::IPPROTO_IPV6,
                entry: 168,
                target_offset_at: 140,
            }
        } else {
            Layout {
                v6,
                level: libc::IPPROTO_IP,
                entry: 112,
                target_offset_at: 88,
            }
        }
    }

    fn names_file(&self) -> &'static str {
        if self.v6 {
            "/proc/net/ip6_tables_names"
        } else {
            "/proc/net/ip_tables_names"
        }
    }

    fn what(&self) -> &'static str {
        if self.v6 {
            "ip6tables-legacy filter"
        } else {
            "iptables-legacy filter"
        }
    }

    /// The entry iptables-legacy would build for the rule (counters and comefrom 0).
    fn entry_bytes(&self, r: &Rule) -> Vec<u8> {
        let size = self.entry + MATCH_SIZE + TARGET_SIZE;
        let mut e = vec![0u8; size];
        // ipt_ip / ip6t_ip6 open with src, dst, smsk, dmsk, each one address long.
        let n = if self.v6 { 16 } else { 4 };
        let addr = match r.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let (at, mask_at) = match r.side {
            Side::From => (0, 2 * n),
            Side::To => (n, 3 * n),
        };
        e[at..at + n].copy_from_slice(&addr);
        e[mask_at..mask_at + n].fill(0xff);
        if self.v6 {
            e[128..130].copy_from_slice(&(r.proto as u16).to_ne_bytes());
            e[131] = IP6T_F_PROTO;
        } else {
            e[80..82].copy_from_slice(&(r.proto as u16).to_ne_bytes());
        }
        let t = self.target_offset_at;
        e[t..t + 2].copy_from_slice(&((self.entry + MATCH_SIZE) as u16).to_ne_bytes());
        e[t + 2..t + 4].copy_from_slice(&(size as u16).to_ne_bytes());
        // The udp/tcp match: port ranges in host order; the other side any port.
        let m = self.entry;
        e[m..m + 2].copy_from_slice(&(MATCH_SIZE as u16).to_ne_bytes());
        let name: &[u8] = if r.proto == libc::IPPROTO_UDP as u8 {
            b"udp"
        } else {
            b"tcp"
        };
        e[m + 2..m + 2 + name.len()].copy_from_slice(name);
        let (sp, dp) = match r.side {
            Side::From => ([r.port, r.port], [0, u16::MAX]),
            Side::To => ([0, u16::MAX], [r.port, r.port]),
        };
        for (i, v) in [sp[0], sp[1], dp[0], dp[1]].into_iter().enumerate() {
            e[m + 32 + 2 * i..m + 34 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        // The standard target: empty name, verdict ACCEPT.
        let tg = self.entry + MATCH_SIZE;
        e[tg..tg + 2].copy_from_slice(&(TARGET_SIZE as u16).to_ne_bytes());
        e[tg + 32..tg + 36].copy_from_slice(&VERDICT_ACCEPT.to_ne_bytes());
        e
    }

    /// Equal but for what the kernel keeps per entry (comefrom, counters).
    fn same(&self, entry: &[u8], ours: &[u8]) -> bool {
        let comefrom = self.target_offset_at + 4;
        entry.len() == ours.len()
            && entry[..comefrom] == ours[..comefrom]
            && entry[self.entry..] == ours[self.entry..]
    }
}

struct TableInfo {
    valid_hooks: u32,
    hook_entry: [u32; 5],
    underflow: [u32; 5],
    num_entries: u32,
    size: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn table_name() -> [u8; 32] {
    let mut n = [0u8; 32];
    n[..6].copy_from_slice(b"filter");
    n
}

fn getsockopt(fd: &OwnedFd, level: i32, opt: i32, buf: &mut [u8]) -> std::io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes; the kernel writes at most len.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn setsockopt(fd: &OwnedFd, level: i32, opt: i32, buf: &[u8]) -> std::io::Result<()> {
    // SAFETY: buf is valid for its length; the kernel only reads it (and writes through the
    // counters pointer inside it, which points at a live buffer of the size it says).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_ptr() as *const libc::c_void,
            buf.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Hold iptables' own lock (`/run/xtables.lock`, flock) while we read and replace the table,
/// when the file is there; released on drop.
struct XtablesLock {
    _held: Option<OwnedFd>,
}

impl XtablesLock {
    fn take() -> XtablesLock {
        let Ok(path) = std::ffi::CString::new(XTABLES_LOCK) else {
            return XtablesLock { _held: None };
        };
        // SAFETY: a plain open(2) of a NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return XtablesLock { _held: None };
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Bounded: iptables holds it for milliseconds; after 5 s go on without it (the kernel
        // still refuses a replace built on a table that changed under us: EAGAIN).
        for _ in 0..50 {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return XtablesLock { _held: Some(fd) };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tracing::warn!("{XTABLES_LOCK} stayed locked for 5 s; going on without it");
        XtablesLock { _held: None }
    }
}

/// The entries of a table blob: (offset, length), walked by next_offset. Each entry's target
/// lies within it, so later reads of targets stay in bounds.
fn walk(blob: &[u8], l: &Layout) -> anyhow::Result<Vec<(usize, usize)>> {
    let u16_at = |i: usize| {
        blob.get(i..i + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < blob.len() {
        let next = u16_at(at + l.target_offset_at + 2).unwrap_or(0);
        let target = u16_at(at + l.target_offset_at).unwrap_or(0);
        let target_size = u16_at(at + target).unwrap_or(0);
        if next < l.entry
            || at + next > blob.len()
            || target < l.entry
            || target_size < 32
            || target + target_size > next
        {
            bail!("{}: malformed entry at offset {at}", l.what());
        }
        out.push((at, next));
        at += next;
    }
    Ok(out)
}

/// Make the legacy filter table hold each wanted rule of this family once, at the head of
/// its chain (`remove`: none). Returns how many rules were added or removed.
fn legacy_sync(want: &[Rule], v6: bool, remove: bool) -> anyhow::Result<usize> {
    let l = Layout::new(v6);
    let names = std::fs::read_to_string(l.names_file()).unwrap_or_default();
    if !names.lines().any(|n| n.trim() == "filter") {
        return Ok(0); // no legacy filter table in this network namespace: nothing drops there
    }
    let want: Vec<(&Rule, Vec<u8>)> = want
        .iter()
        .filter(|r| is_family(r.addr, v6))
        .map(|r| (r, l.entry_bytes(r)))
        .collect();
    // iptables uses a raw socket, which needs CAP_NET_RAW; the x_tables socket options are
    // reached from any IP socket (ip_setsockopt hands unknown options to nf_setsockopt) and
    // need only CAP_NET_ADMIN, which the DaemonSet grants. So a UDP socket.
    // SAFETY: plain socket(2); checked before it is owned.
    let fd = unsafe {
        libc::socket(
            if v6 { libc::AF_INET6 } else { libc::AF_INET },
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("{}: opening a socket", l.what()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Reading needs no lock: the usual case (every rule in place) never takes iptables' lock.
    if legacy_try(&fd, &l, &want, remove, true)? == 0 {
        return Ok(0);
    }
    let _lock = XtablesLock::take();
    // A replace built on a table someone else changed meanwhile fails with EAGAIN: read again.
    for _ in 0..5 {
        match legacy_try(&fd, &l, &want, remove, false) {
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                    == Some(libc::EAGAIN) => {}
            other => return other,
        }
    }
    bail!("{}: the table kept changing under us (EAGAIN)", l.what())
}

/// One read-and-replace of the table; with `check_only`, just 1 when a change is needed.
fn legacy_try(
    fd: &OwnedFd,
    l: &Layout,
    want: &[(&Rule, Vec<u8>)],
    remove: bool,
    check_only: bool,
) -> anyhow::Result<usize> {
    let mut info = [0u8; 84];
    info[..32].copy_from_slice(&table_name());
    getsockopt(fd, l.level, SO_GET_INFO, &mut info)
        .with_context(|| format!("{}: IPT_SO_GET_INFO", l.what()))?;
    let mut t = TableInfo {
        valid_hooks: u32_at(&info, 32),
        hook_entry: [0; 5],
        underflow: [0; 5],
        num_entries: u32_at(&info, 76),
        size: u32_at(&info, 80),
    };
    for h in 0..5 {
        t.hook_entry[h] = u32_at(&info, 36 + 4 * h);
        t.underflow[h] = u32_at(&info, 56 + 4 * h);
    }
    let mut get = vec![0u8; 40 + t.size as usize];
    get[..32].copy_from_slice(&table_name());
    put_u32(&mut get, 32, t.size);
    getsockopt(fd, l.level, SO_GET_ENTRIES, &mut get)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{}: IPT_SO_GET_ENTRIES", l.what()))?;
    let blob = &get[40..];
    let entries = walk(blob, l)?;
    if entries.len() != t.num_entries as usize {
        bail!(
            "{}: {} entries where the kernel said {}",
            l.what(),
            entries.len(),
            t.num_entries
        );
    }
    let ours = |bytes: &[u8]| want.iter().any(|(_, w)| l.same(bytes, w));
    let in_chain = |off: usize, chain: Chain| {
        let h = chain.hook();
        t.valid_hooks & (1 << h) != 0
            && off >= t.hook_entry[h] as usize
            && off <= t.underflow[h] as usize
    };
    // Already right: each wanted rule exactly once in its chain (removal: none at all).
    let count = |w: &[u8], chain: Chain| {
        entries
            .iter()
            .filter(|&&(o, n)| in_chain(o, chain) && l.same(&blob[o..o + n], w))
            .count()
    };
    let present = entries
        .iter()
        .filter(|&&(o, n)| ours(&blob[o..o + n]))
        .count();
    if remove && present == 0 {
        return Ok(0);
    }
    if !remove && want.iter().all(|(r, w)| count(w, r.chain) == 1) && present == want.len() {
        return Ok(0);
    }
    if check_only {
        return Ok(1);
    }
    let mut inserts: [Vec<&[u8]>; 5] = Default::default();
    if !remove {
        for (r, w) in want {
            if t.valid_hooks & (1 << r.chain.hook()) != 0 {
                inserts[r.chain.hook()].push(w);
            }
        }
    }

    // The new blob: our old entries dropped, the wanted ones in front of each chain's first
    // entry. Offsets move, so every old offset is mapped to its new one (a dropped entry to
    // the next entry placed), and hook entries, underflows and jumps are rewritten.
    let mut new = Vec::with_capacity(blob.len() + 4096);
    let mut map = std::collections::HashMap::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut new_hook_entry = t.hook_entry;
    let mut sources: Vec<Option<usize>> = Vec::new(); // old index of each new entry
    for (i, &(o, n)) in entries.iter().enumerate() {
        for h in 0..5 {
            if !inserts[h].is_empty() && o == t.hook_entry[h] as usize {
                new_hook_entry[h] = new.len() as u32;
                for p in pending.drain(..) {
                    map.insert(p, new.len());
                }
                for w in &inserts[h] {
                    new.extend_from_slice(w);
                    sources.push(None);
                }
            }
        }
        let bytes = &blob[o..o + n];
        if ours(bytes) {
            pending.push(o);
            continue;
        }
        for p in pending.drain(..) {
            map.insert(p, new.len());
        }
        map.insert(o, new.len());
        new.extend_from_slice(bytes);
        sources.push(Some(i));
    }
    for p in pending.drain(..) {
        map.insert(p, new.len());
    }
    let remap = |off: u32| -> anyhow::Result<u32> {
        map.get(&(off as usize))
            .map(|&n| n as u32)
            .with_context(|| format!("{}: an offset {off} that starts no entry", l.what()))
    };
    // A standard target's non-negative verdict is a jump to an offset.
    let mut at = 0;
    while at < new.len() {
        let t_off = u16::from_ne_bytes([
            new[at + l.target_offset_at],
            new[at + l.target_offset_at + 1],
        ]) as usize;
        let next = u16::from_ne_bytes([
            new[at + l.target_offset_at + 2],
            new[at + l.target_offset_at + 3],
        ]) as usize;
        let tg = at + t_off;
        let standard = new[tg + 2..tg + 31].iter().all(|b| *b == 0)
            && u16::from_ne_bytes([new[tg], new[tg + 1]]) as usize == TARGET_SIZE;
        if standard {
            let verdict = i32::from_ne_bytes(new[tg + 32..tg + 36].try_into().unwrap());
            if verdict >= 0 {
                let to = remap(verdict as u32)?;
                new[tg + 32..tg + 36].copy_from_slice(&(to as i32).to_ne_bytes());
            }
        }
        at += next;
    }
    let mut replace = vec![0u8; 96];
    replace[..32].copy_from_slice(&table_name());
    put_u32(&mut replace, 32, t.valid_hooks);
    put_u32(&mut replace, 36, sources.len() as u32);
    put_u32(&mut replace, 40, new.len() as u32);
    for h in 0..5 {
        let (entry, under) = if t.valid_hooks & (1 << h) != 0 {
            let e = if inserts[h].is_empty() {
                remap(t.hook_entry[h])?
            } else {
                new_hook_entry[h]
            };
            (e, remap(t.underflow[h])?)
        } else {
            (0, 0)
        };
        put_u32(&mut replace, 44 + 4 * h, entry);
        put_u32(&mut replace, 64 + 4 * h, under);
    }
    // The kernel hands back the old table's counters here, one per old entry.
    let mut old_counters = vec![0u8; 16 * t.num_entries as usize];
    put_u32(&mut replace, 84, t.num_entries);
    replace[88..96].copy_from_slice(&(old_counters.as_mut_ptr() as usize as u64).to_ne_bytes());
    replace.extend_from_slice(&new);
    setsockopt(fd, l.level, SO_SET_REPLACE, &replace)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{}: IPT_SO_SET_REPLACE", l.what()))?;

    // Carry the counters of the entries we kept over to their new places (libiptc does the
    // same): xt_counters_info is name[32], num_counters, then the counters at 40.
    let mut add = vec![0u8; 40 + 16 * sources.len()];
    add[..32].copy_from_slice(&table_name());
    put_u32(&mut add, 32, sources.len() as u32);
    for (i, src) in sources.iter().enumerate() {
        if let Some(j) = src {
            add[40 + 16 * i..56 + 16 * i].copy_from_slice(&old_counters[16 * j..16 * j + 16]);
        }
    }
    if let Err(e) = setsockopt(fd, l.level, SO_SET_ADD_COUNTERS, &add) {
        tracing::warn!(
            "{}: the other rules' counters restart from 0: {e}",
            l.what()
        );
    }
    Ok(if remove { present } else { want.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(admin: Option<u16>) -> NodeLocalConfig {
        NodeLocalConfig {
            interface: "nodelocaldns".into(),
            kind: crate::config::LinkKind::Bridge,
            addresses: vec![
                "169.254.20.10".parse().unwrap(),
                "fd00::10".parse().unwrap(),
            ],
            port: 53,
            notrack: true,
            firewall: true,
            admin_port: admin,
        }
    }

    #[test]
    fn rules_cover_both_directions_both_chains_and_the_admin_port() {
        // Per address: 2 chains x 2 sides x (udp 53, tcp 53).
        assert_eq!(rules(&cfg(None)).len(), 2 * 2 * 2 * 2);
        let with_admin = rules(&cfg(Some(9255)));
        assert_eq!(with_admin.len(), 2 * 2 * 2 * 3);
        let c: Vec<String> = with_admin.iter().map(Rule::comment).collect();
        assert!(c.contains(&"ndots node-local: udp to 169.254.20.10 dport 53".to_string()));
        assert!(c.contains(&"ndots node-local: tcp from fd00::10 sport 9255".to_string()));
        assert!(
            c.iter().all(|c| c.len() < 128),
            "nft keeps comments below 128 bytes"
        );
    }

    #[test]
    fn legacy_entries_are_laid_out_as_iptables_builds_them() {
        for v6 in [false, true] {
            let l = Layout::new(v6);
            let r = rules(&cfg(None))
                .into_iter()
                .find(|r| r.addr.is_ipv6() == v6 && r.side == Side::To)
                .unwrap();
            let e = l.entry_bytes(&r);
            assert_eq!(e.len(), l.entry + 48 + 40);
            let walked = walk(&e, &l).unwrap();
            assert_eq!(walked, vec![(0, e.len())]);
            assert!(l.same(&e, &e));
            let mut counted = e.clone();
            counted[l.entry - 16] = 7; // a packet counter does not make it another rule
            assert!(l.same(&counted, &e));
            let mut other = e.clone();
            other[l.entry + 36] ^= 1; // another port does
            assert!(!l.same(&other, &e));
        }
        // A next_offset that runs past the blob, or below an entry's size, is an error.
        let l = Layout::new(false);
        let mut bad = vec![0u8; 200];
        bad[90..92].copy_from_slice(&400u16.to_ne_bytes());
        assert!(walk(&bad, &l).is_err());
        bad[90..92].copy_from_slice(&0u16.to_ne_bytes());
        assert!(walk(&bad, &l).is_err());
    }

    #[test]
    fn udata_comments_are_read_and_garbage_is_not() {
        let mut u = vec![0u8, 6];
        u.extend_from_slice(b"ndots\0");
        assert_eq!(udata_comment(&u).as_deref(), Some("ndots"));
        assert_eq!(udata_comment(&[0, 50, 1]), None);
        assert_eq!(udata_comment(&[]), None);
    }
}
