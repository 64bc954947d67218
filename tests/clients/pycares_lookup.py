"""ares_getaddrinfo through pycares, whose wheel carries its own c-ares (1.34 for pycares 5.2):
the c-ares 1.34 column of the real-client tests (tests/real_clients.rs). The channel is made
with no options, so c-ares reads /etc/resolv.conf, LOCALDOMAIN and RES_OPTIONS itself.

usage: python3 pycares_lookup.py NAME [inet|inet6|unspec]
       python3 pycares_lookup.py --version
prints "canon NAME" (ares_addrinfo.name: the question of the reply that gave the addresses)
and one "addr ADDRESS" line per result and exits 0, or prints "error CODE" and exits 2.
"""
import socket
import sys
import threading

import pycares

if len(sys.argv) < 2:
    sys.exit("usage: pycares_lookup.py NAME [inet|inet6|unspec]")
if sys.argv[1] == "--version":
    print(pycares.ARES_VERSION)
    sys.exit(0)

# pycares' result and its cdef leave out ares_addrinfo.name; read it before the result is
# parsed and freed. ares.h: struct ares_addrinfo { cnames; nodes; char *name; } (stable since
# 1.16), so name is the third pointer.
_parse = pycares.parse_addrinfo


def parse_with_name(ai):
    ptr = pycares._ffi.cast("char **", ai)[2]
    name = pycares._ffi.string(ptr).decode() if ptr != pycares._ffi.NULL else ""
    result = _parse(ai)
    result.name = name
    return result


pycares.parse_addrinfo = parse_with_name

family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(
    sys.argv[2] if len(sys.argv) > 2 else "", socket.AF_UNSPEC
)
done = threading.Event()
out = {}


def callback(result, errno):
    out["result"], out["errno"] = result, errno
    done.set()


channel = pycares.Channel()
channel.getaddrinfo(
    sys.argv[1], None, family=family, flags=pycares._lib.ARES_AI_CANONNAME, callback=callback
)
if not done.wait(25):
    print("error no callback")
    sys.exit(2)
result, errno = out["result"], out["errno"]
if errno is not None or result is None or not result.nodes:
    print(f"error {errno}")
    sys.exit(2)
print(f"canon {result.name}")
for node in result.nodes:
    addr = node.addr[0]
    print(f"addr {addr.decode() if isinstance(addr, bytes) else addr}")
