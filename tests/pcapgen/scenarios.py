"""Captures a probe built against `ndots analyze`, one per way a capture was misread: written
into the directory given, one `<name>.pcap` each. tests/captures.rs says what each must read as.

Usage: python3 scenarios.py DIR
"""
import os
import sys

import dns.rrset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcapw import ACK, FIN, PSH, SYN, Pcap, framed, query, resp, tcp, udp, wire  # noqa: E402

C, S = '10.244.1.5', '10.96.0.10'
SEARCH = ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local', '']
OUT = sys.argv[1]


def a_record(name, *addrs):
    return dns.rrset.from_text(name, 60, 'IN', 'A', *addrs)


def handshake(p, t, cport, cs, ss):
    """A TCP connection opened from `cport`: the client's and server's next sequence numbers."""
    p.add(t, tcp(C, cport, S, 53, cs, SYN))
    p.add(t + 1e-4, tcp(S, 53, C, cport, ss, SYN | ACK))
    return cs + 1, ss + 1


def tcp_exchange(p, t, fq, rcode=0, answered=True, cport=45555):
    """A TCP connection asking `fq` once: handshake, query, answer, close."""
    cs, ss = handshake(p, t, cport, 100, 900)
    q = query(fq, 'A', 999)
    w = framed(wire(q))
    p.add(t + 2e-4, tcp(C, cport, S, 53, cs, PSH | ACK, w))
    cs += len(w)
    w = framed(wire(resp(q, rcode, [a_record(fq, '192.0.2.1')] if answered else [])))
    p.add(t + 1e-3, tcp(S, 53, C, cport, ss, PSH | ACK, w))
    ss += len(w)
    p.add(t + 2e-3, tcp(S, 53, C, cport, ss, FIN | ACK))
    p.add(t + 2.1e-3, tcp(C, cport, S, 53, cs, FIN | ACK))


def tc_walk(k):
    """A glibc walk of big.example.com whose k-th candidate's UDP answer has TC; the stub asks
    that candidate again over TCP and goes on. One lookup, resolved."""
    p = Pcap(os.path.join(OUT, 'tc_walk%d.pcap' % k))
    t = 1000.0
    name = 'big.example.com'
    for i, s in enumerate(SEARCH):
        fq = name + '.' + s + '.' if s else name + '.'
        q = query(fq, 'A', 900 + i)
        p.add(t, udp(C, 40000, S, 53, wire(q)))
        rcode = 3 if s else 0
        if i == k:
            p.add(t + 0.0005, udp(S, 53, C, 40000, wire(resp(q, rcode, [], tc=True))))
            tcp_exchange(p, t + 0.001, fq, rcode, answered=not s)
            t += 0.004
        else:
            answers = [] if s else [a_record(fq, '192.0.2.1')]
            p.add(t + 0.0005, udp(S, 53, C, 40000, wire(resp(q, rcode, answers))))
        t += 0.001
    p.close()


def tcp_gap(fin, more):
    """One TCP connection: a big answer whose middle segment was not captured, then `more`
    query/answer pairs; closed with FIN or not. The first query is unanswered, the rest are
    answered, one gap, nothing invented."""
    p = Pcap(os.path.join(OUT, 'tcp_gap_%s_%d.pcap' % ('fin' if fin else 'eof', more)))
    t, cp = 1000.0, 45000
    cs, ss = handshake(p, t, cp, 1000, 5000)
    q1 = query('big.example.', 'A', 11)
    w = framed(wire(q1))
    p.add(t + 2e-4, tcp(C, cp, S, 53, cs, PSH | ACK, w))
    cs += len(w)
    r1 = resp(q1, 0, [a_record('big.example.', *['10.0.1.%d' % i for i in range(20, 40)])])
    w = framed(wire(r1))
    p.add(t + 3e-3, tcp(S, 53, C, cp, ss, ACK, w[:100]))
    # bytes 100..200 never captured
    p.add(t + 3.1e-3, tcp(S, 53, C, cp, ss + 200, PSH | ACK, w[200:]))
    ss += len(w)
    t += 0.01
    for k in range(more):
        name = 'svc%d.example.' % k
        q = query(name, 'A', 20 + k)
        w = framed(wire(q))
        p.add(t, tcp(C, cp, S, 53, cs, PSH | ACK, w))
        cs += len(w)
        w = framed(wire(resp(q, 0, [a_record(name, '192.0.2.%d' % (k + 1))])))
        p.add(t + 1e-3, tcp(S, 53, C, cp, ss, PSH | ACK, w))
        ss += len(w)
        t += 0.01
    if fin:
        p.add(t, tcp(S, 53, C, cp, ss, FIN | ACK))
        p.add(t + 1e-4, tcp(C, cp, S, 53, cs, FIN | ACK))
    p.close()


def tcp_txt():
    """A TXT answer whose text holds a framed DNS query; the segment with the answer's start is
    not captured. The embedded bytes are not a message of the stream: no lookup of them."""
    p = Pcap(os.path.join(OUT, 'tcp_txt.pcap'))
    t, cp = 1000.0, 45001
    cs, ss = handshake(p, t, cp, 1000, 5000)
    q1 = query('blob.example.', 'TXT', 11)
    w = framed(wire(q1))
    p.add(t + 2e-4, tcp(C, cp, S, 53, cs, PSH | ACK, w))
    cs += len(w)
    inner = framed(wire(query('phantom.default.svc.cluster.local.', 'A', 4242)))
    rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.TXT,
                             bytes([len(inner)]) + inner, 0, len(inner) + 1)
    rr = dns.rrset.RRset(dns.name.from_text('blob.example.'), dns.rdataclass.IN,
                         dns.rdatatype.TXT)
    rr.add(rd, 60)
    w = framed(wire(resp(q1, 0, [rr])))
    p.add(t + 3e-3, tcp(S, 53, C, cp, ss, ACK, w[:20]))
    # bytes 20..40 never captured; the next segment starts inside the TXT string, and so
    # would one cut at the embedded query
    cut = 40 + w[40:].index(inner)
    p.add(t + 3.1e-3, tcp(S, 53, C, cp, ss + 40, ACK, w[40:cut]))
    p.add(t + 3.2e-3, tcp(S, 53, C, cp, ss + cut, PSH | ACK, w[cut:]))
    ss += len(w)
    p.add(t + 0.01, tcp(S, 53, C, cp, ss, FIN | ACK))
    p.add(t + 0.0101, tcp(C, cp, S, 53, cs, FIN | ACK))
    p.close()


def mid_connection():
    """The capture starts inside a connection: the first captured segment is the tail of an
    earlier answer, then two whole query/answer pairs. Both read, one loss counted."""
    p = Pcap(os.path.join(OUT, 'mid_connection.pcap'))
    t, cp, cs, ss = 1000.0, 46000, 7000, 9000
    q = query('earlier.example.', 'A', 1)
    old = framed(wire(resp(q, 0, [a_record('earlier.example.', '192.0.2.7')])))
    p.add(t, tcp(S, 53, C, cp, ss, PSH | ACK, old[-30:]))
    ss += 30
    for k, name in enumerate(['one.example.', 'two.example.']):
        q = query(name, 'A', 20 + k)
        w = framed(wire(q))
        p.add(t + 0.01 * (k + 1), tcp(C, cp, S, 53, cs, PSH | ACK, w))
        cs += len(w)
        w = framed(wire(resp(q, 0, [a_record(name, '192.0.2.7')])))
        p.add(t + 0.01 * (k + 1) + 0.001, tcp(S, 53, C, cp, ss, PSH | ACK, w))
        ss += len(w)
    p.close()


def musl_two_nameservers():
    """musl asks both nameservers at once (one socket, one ID) and takes the first answer; the
    second server answers 24 ms later. One lookup."""
    p = Pcap(os.path.join(OUT, 'musl_two_nameservers.pcap'))
    t = 1000.0
    name = 'api.github.com'
    for i, s in enumerate(SEARCH):
        fq = name + '.' + s + '.' if s else name + '.'
        q = query(fq, 'A', 500 + i)
        p.add(t, udp(C, 40000, '10.0.0.2', 53, wire(q)))
        p.add(t + 0.00002, udp(C, 40000, '10.0.0.3', 53, wire(q)))
        r = resp(q, 3) if s else resp(q, 0, [a_record(fq, '140.82.112.3')])
        p.add(t + 0.001, udp('10.0.0.2', 53, C, 40000, wire(r)))
        p.add(t + 0.025, udp('10.0.0.3', 53, C, 40000, wire(r)))
        t += 0.03
    p.close()


def copy_after_answer():
    """`-i any` with a node-local cache: the query, the answer, then each one's copy from the
    other interface (the destination rewritten by DNAT). One lookup, two copies."""
    p = Pcap(os.path.join(OUT, 'copy_after_answer.pcap'))
    t, pod = 1000.0, '10.244.0.9'
    fq = 'kafka.default.svc.cluster.local.'
    q = query(fq, 'A', 77)
    r = resp(q, 0, [a_record(fq, '10.96.1.1')])
    p.add(t, udp(C, 40000, S, 53, wire(q)))
    p.add(t + 0.00002, udp(pod, 53, C, 40000, wire(r)))
    p.add(t + 0.00004, udp(C, 40000, pod, 53, wire(q)))
    p.add(t + 0.00006, udp(S, 53, C, 40000, wire(r)))
    p.close()


for k in range(4):
    tc_walk(k)
for fin in (True, False):
    tcp_gap(fin, 4)
tcp_txt()
mid_connection()
musl_two_nameservers()
copy_after_answer()
