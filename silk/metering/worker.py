"""This process's name on the holds it owns: random, so nobody needs to see its PID.

Processes that share a hostname need not share a PID namespace (containers with host
networking), so a PID says nothing about another process. A hold's owner is known by this
name only, and proves it is alive by renewing the hold's lease (silk.metering.keeper).
"""

from __future__ import annotations

import os
import secrets
import socket

_made: tuple[int, str] | None = None  # (the pid that made it, the name)


def identity() -> str:
    """This process's worker name, `hostname:random`, made in the process that uses it."""
    global _made
    # Our own PID only tells a forked child that the name it inherited is its parent's.
    pid = os.getpid()
    if _made is None or _made[0] != pid:
        _made = (pid, f"{socket.gethostname()[:80]}:{secrets.token_hex(8)}")
    return _made[1]
