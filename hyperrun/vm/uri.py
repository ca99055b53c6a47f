"""Which libvirt a command talks to: --connect, else $HYPERRUN_CONNECT, else the system's.

Apart from vm/hypervisor.py so that commands which may not need libvirt at all (`exec`
into a running container) can tell the URI without importing it.
"""

from __future__ import annotations

import os

DEFAULT_URI = "qemu:///system"


def uri_from_env(explicit: str | None = None) -> str:
    return explicit or os.environ.get("HYPERRUN_CONNECT") or DEFAULT_URI
