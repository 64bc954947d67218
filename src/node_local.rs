//! The node-local address (issue 7): a link holding 169.254.20.10 (and, when asked, the
//! kube-dns ClusterIP, as NodeLocal DNSCache does in iptables mode), and optionally nftables
//! NOTRACK rules for DNS to and from those addresses, so node-local DNS does not fill the
//! conntrack table.
//!
//! Everything here is idempotent (an existing link or address is fine) and nothing is ever
//! removed: when the proxy exits, restarts or is replaced in a rolling update, the address
//! stays. With a surge pod already bound (SO_REUSEPORT) its queries simply go to the new
//! process; between a crash and the restart they are refused at once (an error, not a timeout)
//! instead of being routed off the node towards an address that no longer exists locally
//! (NodeLocal DNSCache's outage on update came from tearing the address down).

use std::ffi::CString;
use std::net::IpAddr;

use anyhow::{bail, Context};

use crate::config::NodeLocalConfig;
use crate::netlink::{errno_text, Message, Socket, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};

/// Create the link and addresses and, if configured, load the NOTRACK table and the firewall
/// rules.
pub fn ensure(cfg: &NodeLocalConfig) -> anyhow::Result<()> {
    let (created, added) = link_and_addresses(cfg)?;
    if cfg.notrack {
        let mut nf =
            Socket::open(libc::NETLINK_NETFILTER).context("opening an nfnetlink socket")?;
        load_notrack_table(&mut nf, &cfg.addresses, cfg.port)?;
    }
    let accepts = if cfg.firewall {
        crate::firewall::ensure(cfg)?
    } else {
        0
    };
    tracing::info!(
        interface = %cfg.interface,
        created,
        added,
        addresses = ?cfg.addresses,
        notrack = cfg.notrack,
        firewall_rules_loaded = accepts,
        "node-local address in place (never removed on exit)"
    );
    Ok(())
}

/// Put back the link, its up state, the addresses, the NOTRACK table and the firewall rules if
/// something else removed them (another node-local cache tearing its setup down on exit, an
/// administrator, `nft flush ruleset`, a firewall reload); the listeners stay bound to the
/// addresses and receive again as soon as they are back. Returns whether anything was missing.
pub fn restore(cfg: &NodeLocalConfig) -> anyhow::Result<bool> {
    let (created, added) = link_and_addresses(cfg)?;
    let mut notrack = false;
    if cfg.notrack {
        let mut nf =
            Socket::open(libc::NETLINK_NETFILTER).context("opening an nfnetlink socket")?;
        if notrack_rule_count(&mut nf)? != 6 * cfg.addresses.len() {
            load_notrack_table(&mut nf, &cfg.addresses, cfg.port)?;
            notrack = true;
        }
    }
    let accepts = if cfg.firewall {
        crate::firewall::ensure(cfg)?
    } else {
        0
    };
    let missing = created || added > 0 || notrack || accepts > 0;
    for (what, n) in [
        ("link", created as u64),
        ("address", added as u64),
        ("notrack", notrack as u64),
        ("firewall", accepts as u64),
    ] {
        if n > 0 {
            metrics::counter!(crate::metrics::NODE_LOCAL_RESTORES, "what" => what).increment(n);
        }
    }
    if missing {
        tracing::warn!(
            interface = %cfg.interface,
            link_created = created,
            addresses_added = added,
            notrack_table_reloaded = notrack,
            firewall_rules_reloaded = accepts,
            "node-local setup had been removed in part; restored"
        );
    }
    Ok(missing)
}

/// What `ndots node-local teardown` removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub link: bool,
    pub notrack_table: bool,
    pub firewall_rules: usize,
}

/// `ndots node-local teardown`: remove the link (its addresses go with it), the NOTRACK table
/// and our firewall rules; what is already gone is fine. Stop the proxy first, or its
/// reconciler puts everything back within 2 s.
pub fn teardown(cfg: &NodeLocalConfig) -> anyhow::Result<Teardown> {
    let firewall_rules = crate::firewall::remove(cfg)?;
    let mut nf = Socket::open(libc::NETLINK_NETFILTER).context("opening an nfnetlink socket")?;
    let mut batch = vec![Message::batch_marker(
        NFNL_MSG_BATCH_BEGIN,
        &nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES),
    )];
    let mut del = nft(NFT_MSG_DELTABLE, 0);
    del.attr_str(NFTA_TABLE_NAME, NOTRACK_TABLE);
    batch.push(del);
    batch.push(Message::batch_marker(
        NFNL_MSG_BATCH_END,
        &nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES),
    ));
    let notrack_table = match nf
        .send(batch)
        .context("netlink, deleting the NOTRACK table")?
        .pop()
    {
        Some(Ok(())) | None => true,
        Some(Err(libc::ENOENT)) => false,
        Some(Err(e)) => bail!(
            "deleting nftables table inet {NOTRACK_TABLE}: {}",
            errno_text(e)
        ),
    };
    let mut route = Socket::open(libc::NETLINK_ROUTE).context("opening an rtnetlink socket")?;
    let mut m = Message::new(RTM_DELLINK, 0, &ifinfomsg(0, 0, 0));
    m.attr_str(IFLA_IFNAME, &cfg.interface);
    let link = match one(&mut route, m, "deleting the link")? {
        Ok(()) => true,
        Err(libc::ENODEV) => false,
        Err(e) => bail!("deleting link {}: {}", cfg.interface, errno_text(e)),
    };
    Ok(Teardown {
        link,
        notrack_table,
        firewall_rules,
    })
}

/// The rules in the NOTRACK table now (0 when it is gone: `nft flush ruleset`).
fn notrack_rule_count(sock: &mut Socket) -> anyhow::Result<usize> {
    let mut m = Message::dump(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
        &nfgenmsg(NFPROTO_INET, 0),
    );
    m.attr_str(NFTA_RULE_TABLE, NOTRACK_TABLE);
    match sock.dump(m).context("netlink, listing the NOTRACK rules")? {
        Ok(rules) => Ok(rules.len()),
        Err(libc::ENOENT) => Ok(0),
        Err(e) => bail!(
            "listing nftables table inet {NOTRACK_TABLE}: {}",
            errno_text(e)
        ),
    }
}

/// (link created, addresses added)
fn link_and_addresses(cfg: &NodeLocalConfig) -> anyhow::Result<(bool, usize)> {
    let mut route = Socket::open(libc::NETLINK_ROUTE).context("opening an rtnetlink socket")?;
    let created = create_link(&mut route, &cfg.interface, cfg.kind.as_str())?;
    let index = link_index(&cfg.interface)?;
    set_up(&mut route, index, &cfg.interface)?;
    let mut added = 0;
    for addr in &cfg.addresses {
        if add_address(&mut route, index, *addr, &cfg.interface)? {
            added += 1;
        }
    }
    Ok((created, added))
}

// rtnetlink (linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// No duplicate address detection: an IPv6 address is usable at once, as for a dummy link.
const IFA_F_NODAD: u8 = 0x02;

/// `struct ifinfomsg`: family, pad, type, index, flags, change (16 bytes).
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `ip link add NAME type KIND`; false when the link was already there (of any kind: a
/// NodeLocal DNSCache link being taken over is fine).
fn create_link(sock: &mut Socket, name: &str, kind: &str) -> anyhow::Result<bool> {
    let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0));
    m.attr_str(IFLA_IFNAME, name);
    m.nest(IFLA_LINKINFO)
        .attr(IFLA_INFO_KIND, kind.as_bytes())
        .end_nest();
    match one(sock, m, "creating the link")? {
        Ok(()) => Ok(true),
        Err(libc::EEXIST) => Ok(false),
        Err(libc::EOPNOTSUPP) => bail!(
            "creating link {name}: this kernel has no `{kind}` link type \
             (for dummy: CONFIG_DUMMY); set node_local.kind: bridge"
        ),
        Err(e) => bail!("creating link {name} ({kind}): {}", errno_text(e)),
    }
}

fn link_index(name: &str) -> anyhow::Result<i32> {
    let c = CString::new(name).context("link name")?;
    // SAFETY: c is a valid NUL-terminated string; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!(
            "link {name} is missing right after creating it: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(index as i32)
}

/// `ip link set NAME up`.
fn set_up(sock: &mut Socket, index: i32, name: &str) -> anyhow::Result<()> {
    let up = libc::IFF_UP as u32;
    let m = Message::new(RTM_NEWLINK, 0, &ifinfomsg(index, up, up));
    one(sock, m, "bringing the link up")?
        .map_err(|e| anyhow::anyhow!("bringing link {name} up: {}", errno_text(e)))
}

/// `ip addr add ADDR/32 dev NAME` (/128 for IPv6); an address already there is fine (false).
fn add_address(sock: &mut Socket, index: i32, addr: IpAddr, name: &str) -> anyhow::Result<bool> {
    let (family, prefix, bytes, flags) = match addr {
        IpAddr::V4(a) => (libc::AF_INET, 32u8, a.octets().to_vec(), 0),
        IpAddr::V6(a) => (libc::AF_INET6, 128u8, a.octets().to_vec(), IFA_F_NODAD),
    };
    // `struct ifaddrmsg`: family, prefixlen, flags, scope (universe), index.
    let mut fixed = [0u8; 8];
    fixed[0] = family as u8;
    fixed[1] = prefix;
    fixed[2] = flags;
    fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed);
    m.attr(IFA_LOCAL, &bytes).attr(IFA_ADDRESS, &bytes);
    match one(sock, m, "adding an address")? {
        Ok(()) => Ok(true),
        Err(libc::EEXIST) => Ok(false),
        Err(e) => bail!("adding {addr} to {name}: {}", errno_text(e)),
    }
}

/// Send one request and return the kernel's verdict on it.
fn one(sock: &mut Socket, m: Message, what: &str) -> anyhow::Result<Result<(), i32>> {
    let mut r = sock
        .send(vec![m])
        .with_context(|| format!("netlink, {what}"))?;
    Ok(r.pop().unwrap_or(Ok(())))
}

// nf_tables over nfnetlink (linux/netfilter/nfnetlink.h, nf_tables.h).
pub const NOTRACK_TABLE: &str = "ndots";
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
/// NF_IP_PRI_RAW: before conntrack (-200) sees the packet.
const PRIORITY_RAW: i32 = -300;

/// `struct nfgenmsg`: family, version (0), res_id (big-endian).
fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn nft(kind: u16, flags: u16) -> Message {
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        &nfgenmsg(NFPROTO_INET, 0),
    )
}

/// Which side of the packet a rule matches the node-local address on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Query to the address: destination address and port.
    To,
    /// Answer from the address: source address and port.
    From,
}

/// Load, in one transaction, the table
///
/// ```text
/// table inet ndots {
///   chain prerouting { type filter hook prerouting priority raw;
///     ip daddr ADDR udp dport PORT notrack; ... tcp ... }
///   chain output { type filter hook output priority raw;
///     ip saddr ADDR udp sport PORT notrack; ip daddr ADDR udp dport PORT notrack; ... }
/// }
/// ```
///
/// replacing any earlier copy (add, delete, add: the first add makes the delete valid when
/// the table is new), so a restart never leaves a moment without the rules.
fn load_notrack_table(sock: &mut Socket, addrs: &[IpAddr], port: u16) -> anyhow::Result<()> {
    let mut batch = vec![Message::batch_marker(
        NFNL_MSG_BATCH_BEGIN,
        &nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES),
    )];
    let table = |kind, flags| {
        let mut m = nft(kind, flags);
        m.attr_str(NFTA_TABLE_NAME, NOTRACK_TABLE);
        m
    };
    batch.push(table(NFT_MSG_NEWTABLE, NLM_F_CREATE));
    batch.push(table(NFT_MSG_DELTABLE, 0));
    batch.push(table(NFT_MSG_NEWTABLE, NLM_F_CREATE));
    for (chain, hook) in [
        ("prerouting", NF_INET_PRE_ROUTING),
        ("output", NF_INET_LOCAL_OUT),
    ] {
        let mut m = nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        m.attr_str(NFTA_CHAIN_TABLE, NOTRACK_TABLE)
            .attr_str(NFTA_CHAIN_NAME, chain)
            .nest(NFTA_CHAIN_HOOK)
            .attr_be32(NFTA_HOOK_HOOKNUM, hook)
            .attr_be32(NFTA_HOOK_PRIORITY, PRIORITY_RAW as u32)
            .end_nest()
            .attr_str(NFTA_CHAIN_TYPE, "filter");
        batch.push(m);
    }
    for addr in addrs {
        for proto in [libc::IPPROTO_UDP as u8, libc::IPPROTO_TCP as u8] {
            // Queries arriving from pods; answers leaving; queries from the node itself.
            batch.push(notrack_rule("prerouting", *addr, proto, port, Side::To));
            batch.push(notrack_rule("output", *addr, proto, port, Side::From));
            batch.push(notrack_rule("output", *addr, proto, port, Side::To));
        }
    }
    batch.push(Message::batch_marker(
        NFNL_MSG_BATCH_END,
        &nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES),
    ));
    let results = sock
        .send(batch)
        .context("netlink, loading the NOTRACK table")?;
    // ECANCELED marks the messages the aborted batch never answered; the cause is elsewhere.
    if let Some(Err(e)) = results
        .iter()
        .find(|r| matches!(r, Err(e) if *e != libc::ECANCELED))
    {
        bail!(
            "loading nftables table inet {NOTRACK_TABLE} (NOTRACK): {}",
            errno_text(*e)
        );
    }
    Ok(())
}

/// `meta nfproto F; meta l4proto P; ip daddr A; th dport PORT; notrack` (or saddr/sport).
fn notrack_rule(chain: &str, addr: IpAddr, proto: u8, port: u16, side: Side) -> Message {
    let (family, addr_bytes, addr_offset) = match (addr, side) {
        // IPv4 header: saddr at 12, daddr at 16. IPv6: saddr at 8, daddr at 24.
        (IpAddr::V4(a), Side::From) => (NFPROTO_IPV4, a.octets().to_vec(), 12),
        (IpAddr::V4(a), Side::To) => (NFPROTO_IPV4, a.octets().to_vec(), 16),
        (IpAddr::V6(a), Side::From) => (NFPROTO_IPV6, a.octets().to_vec(), 8),
        (IpAddr::V6(a), Side::To) => (NFPROTO_IPV6, a.octets().to_vec(), 24),
    };
    // UDP and TCP: source port at 0, destination port at 2.
    let port_offset = match side {
        Side::From => 0,
        Side::To => 2,
    };
    let mut m = nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
    m.attr_str(NFTA_RULE_TABLE, NOTRACK_TABLE)
        .attr_str(NFTA_RULE_CHAIN, chain)
        .nest(NFTA_RULE_EXPRESSIONS);
    meta(&mut m, NFT_META_NFPROTO);
    cmp_eq(&mut m, &[family]);
    meta(&mut m, NFT_META_L4PROTO);
    cmp_eq(&mut m, &[proto]);
    payload(
        &mut m,
        NFT_PAYLOAD_NETWORK_HEADER,
        addr_offset,
        addr_bytes.len() as u32,
    );
    cmp_eq(&mut m, &addr_bytes);
    payload(&mut m, NFT_PAYLOAD_TRANSPORT_HEADER, port_offset, 2);
    cmp_eq(&mut m, &port.to_be_bytes());
    m.nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "notrack")
        .end_nest();
    m.end_nest();
    m
}

pub(crate) fn meta(m: &mut Message, key: u32) {
    m.nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "meta")
        .nest(NFTA_EXPR_DATA)
        .attr_be32(NFTA_META_KEY, key)
        .attr_be32(NFTA_META_DREG, NFT_REG_1)
        .end_nest()
        .end_nest();
}

pub(crate) fn payload(m: &mut Message, base: u32, offset: u32, len: u32) {
    m.nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "payload")
        .nest(NFTA_EXPR_DATA)
        .attr_be32(NFTA_PAYLOAD_DREG, NFT_REG_1)
        .attr_be32(NFTA_PAYLOAD_BASE, base)
        .attr_be32(NFTA_PAYLOAD_OFFSET, offset)
        .attr_be32(NFTA_PAYLOAD_LEN, len)
        .end_nest()
        .end_nest();
}

pub(crate) fn cmp_eq(m: &mut Message, value: &[u8]) {
    m.nest(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, "cmp")
        .nest(NFTA_EXPR_DATA)
        .attr_be32(NFTA_CMP_SREG, NFT_REG_1)
        .attr_be32(NFTA_CMP_OP, NFT_CMP_EQ)
        .nest(NFTA_CMP_DATA)
        .attr(NFTA_DATA_VALUE, value)
        .end_nest()
        .end_nest()
        .end_nest();
}
