"""Which TCP sockets a process tree listens on, read from /proc (Linux)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

_LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


def listening_sockets(root_pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``root_pid`` and its descendants."""
    inodes = {inode for pid in _process_tree(root_pid) for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == _LISTEN and inode in inodes:
                address, port = local.split(":")
                found.append((_address(address), int(port, 16)))
    return sorted(found)


def _process_tree(root_pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process ended meanwhile
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root_pid}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sorted(tree)


def _socket_inodes(pid: int) -> list[int]:
    inodes = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.append(int(target[len("socket:[") : -1]))
    except OSError:  # the process ended meanwhile
        pass
    return inodes


def _address(hex_address: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) byte order."""
    raw = b"".join(
        bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, len(hex_address), 8)
    )
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)  # Java's IPv6 socket bound to an IPv4 address
    return str(address)
