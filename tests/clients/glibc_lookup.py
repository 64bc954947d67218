"""glibc's resolver for one lookup of the kind an application makes, for the real-client tests
(tests/pod_through_proxy.rs):

  python3 glibc_lookup.py NAME inet|inet6|unspec   getaddrinfo with that family (no AI_V4MAPPED,
                                                   unlike `getent ahostsv6`): one "addr ADDRESS"
                                                   line per address, sorted
  python3 glibc_lookup.py NAME TXT|MX|SRV          res_search (the search list, as libresolv
                                                   users such as SRV and TXT lookups walk it):
                                                   one "data RDATA" line per record of the type

Prints "error CODE" (EAI_* for getaddrinfo; "noanswer" when res_search fails, "nodata" when its
answer holds no record of the type) and exits 2.
"""
import ctypes
import socket
import sys

FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unspec": socket.AF_UNSPEC}
TYPES = {"MX": 15, "TXT": 16, "SRV": 33}


def addresses(name, family):
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    except socket.gaierror as e:
        print("error", e.errno)
        sys.exit(2)
    for addr in sorted({info[4][0] for info in infos}):
        print("addr", addr)


def res_search():
    # glibc 2.34 moved res_search into libc; before, libresolv exports it as __res_search.
    for lib, symbol in (("libc.so.6", "res_search"), ("libresolv.so.2", "__res_search")):
        f = getattr(ctypes.CDLL(lib, use_errno=True), symbol, None)
        if f is not None:
            return f
    raise SystemExit("no res_search in this glibc")


def records(name, rrtype):
    import dns.message  # dnspython: reads the answer independently of the proxy's code

    buf = ctypes.create_string_buffer(65535)
    n = res_search()(name.encode(), 1, TYPES[rrtype], buf, len(buf))
    if n < 0:
        print("error", "noanswer")  # h_errno is thread-local, out of ctypes' reach
        sys.exit(2)
    answer = dns.message.from_wire(buf.raw[:n])
    data = sorted(
        rd.to_text() for rrset in answer.answer if rrset.rdtype == TYPES[rrtype] for rd in rrset
    )
    if not data:
        print("error nodata")
        sys.exit(2)
    for d in data:
        print("data", d)


name, kind = sys.argv[1], sys.argv[2]
if kind in FAMILIES:
    addresses(name, FAMILIES[kind])
else:
    records(name, kind)
