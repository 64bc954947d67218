"""glibc's getaddrinfo (AF_UNSPEC) through Python's socket module, which hands the EAI_* code on
(`getent` exits 2 for every failure alike): the glibc column of the outcome test in
tests/pod_through_proxy.rs.

usage: python3 glibc_gai.py NAME
prints "canon" and exits 0, or prints "error CODE" (EAI_NONAME -2, EAI_AGAIN -3, EAI_NODATA -5)
and exits 2.
"""
import socket
import sys

try:
    socket.getaddrinfo(sys.argv[1], None)
except socket.gaierror as e:
    print("error", e.errno)
    sys.exit(2)
print("canon")
