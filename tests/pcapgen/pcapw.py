"""A small pcap writer for tests: Ethernet/IPv4 frames with UDP or TCP, microsecond times.

The DNS messages come from dnspython, so the tests read bytes ndots did not encode.
"""
import struct, socket
import dns.message, dns.rrset, dns.flags, dns.opcode, dns.rdataclass


def csum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff


def ip4(src, dst, proto, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload


def eth(ipp):
    return b'\x02\0\0\0\0\x01' + b'\x02\0\0\0\0\x02' + b'\x08\x00' + ipp


def udp(src, sport, dst, dport, data):
    u = struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
    return eth(ip4(src, dst, 17, u))


SYN, FIN, RST, PSH, ACK = 2, 1, 4, 8, 16


def tcp(src, sport, dst, dport, seq, flags, data=b'', ack=0):
    t = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xffffffff, ack, 5 << 4, flags, 65535, 0, 0) + data
    return eth(ip4(src, dst, 6, t))


class Pcap:
    def __init__(self, path, snaplen=262144):
        self.f = open(path, 'wb')
        self.f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, snaplen, 1))

    def add(self, t, frame, caplen=None):
        sec = int(t)
        us = int(round((t - sec) * 1e6))
        data = frame if caplen is None else frame[:caplen]
        self.f.write(struct.pack('<IIII', sec, us, len(data), len(frame)) + data)

    def close(self):
        self.f.close()


def query(name, rtype='A', qid=1234, rd=True):
    m = dns.message.make_query(name, rtype, use_edns=False)
    m.id = qid
    if not rd:
        m.flags &= ~dns.flags.RD
    return m


def wire(m):
    return m.to_wire()


def resp(q, rcode=0, answers=(), tc=False):
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    for a in answers:
        r.answer.append(a)
    if tc:
        r.flags |= dns.flags.TC
    return r


def framed(b):
    return struct.pack('!H', len(b)) + b
