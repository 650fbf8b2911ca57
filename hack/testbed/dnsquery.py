"""Ask one DNS server for a name's A records, and print them (one per line); exit 1 if none.

The test bed's own look at its cluster DNS (hack/testbed/realnode.sh waits on it; the e2e tests
use `query` as a witness): a plain UDP query to the address given, never the host's resolver.

    python3 hack/testbed/dnsquery.py 10.88.255.254 kubernetes.default.svc.cluster.local
"""

from __future__ import annotations

import random
import socket
import struct
import sys


def query(server: str, name: str, *, port: int = 53, timeout: float = 2.0) -> list[str]:
    """The A records `server` answers for `name` (empty: no such name, or no answer)."""
    ident = random.randrange(1 << 16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        data, _ = s.recvfrom(4096)
    got_id, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    if got_id != ident or flags & 0x000F:  # not our answer, or an error code (NXDOMAIN, ...)
        return []
    at = 12
    for _ in range(qd):  # skip the question
        at = _skip_name(data, at) + 4
    addresses = []
    for _ in range(an):
        at = _skip_name(data, at)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[at : at + 10])
        at += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(data[at : at + 4]))
        at += length
    return addresses


def _skip_name(data: bytes, at: int) -> int:
    while True:
        length = data[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return at + 2
        at += 1 + length


if __name__ == "__main__":
    try:
        found = query(sys.argv[1], sys.argv[2])
    except OSError as exc:
        print(f"no answer from {sys.argv[1]}: {exc}", file=sys.stderr)
        sys.exit(1)
    print("\n".join(found))
    sys.exit(0 if found else 1)
