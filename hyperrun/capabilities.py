"""Linux capabilities of a container's processes: docker's names, default set and rules.

The agent takes capability numbers (docs/protocol.md, EXEC `caps`); names are resolved
here, before anything boots, so a typo is a usage error and not a failed VM.
"""

from __future__ import annotations

from hyperrun.errors import UsageError

# Linux 6.1's list (include/uapi/linux/capability.h), in number order.
NAMES: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN",
    "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
NUMBERS = {name: number for number, name in enumerate(NAMES)}

# What docker grants a container that asks for nothing (moby's oci/caps/defaults.go).
DEFAULT: frozenset[str] = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})

ALL = "ALL"
_HINT = "use a capability name such as NET_ADMIN or CAP_SYS_PTRACE, or ALL"


def _normalise(option: str, values: tuple[str, ...]) -> set[str]:
    """Docker's spelling rules: any case, with or without CAP_, and ALL."""
    out = set()
    for value in values:
        upper = value.strip().upper()
        name = upper if upper == ALL else upper.removeprefix("CAP_")
        if upper != ALL and name not in NUMBERS:  # CAP_ALL is no name either
            raise UsageError(f"unknown capability {value[:80]!r} in {option}", hint=_HINT)
        out.add(name)
    return out


def resolve(*, privileged: bool = False, add: tuple[str, ...] = (),
            drop: tuple[str, ...] = ()) -> frozenset[str] | None:
    """The container's capabilities by docker's rules; None means every one the kernel has.

    As in moby's TweakCapabilities: --privileged gives everything; --cap-add ALL gives
    everything but the --cap-drop list; --cap-drop ALL leaves only the --cap-add list;
    otherwise the default set minus the drops plus the adds. Names are checked in every
    case, so a typo is an error even with --privileged.
    """
    adds = _normalise("--cap-add", add)
    drops = _normalise("--cap-drop", drop)
    if privileged:
        return None
    if ALL in adds:
        return None if not drops else frozenset(NUMBERS) - drops
    if ALL in drops:
        return frozenset(adds)
    return frozenset((DEFAULT - drops) | adds)


def wire(caps: frozenset[str] | None) -> str:
    """The value of EXEC's `caps` key: all, none, or the numbers in increasing order."""
    if caps is None:
        return "all"
    if not caps:
        return "none"
    return ",".join(str(n) for n in sorted(NUMBERS[name] for name in caps))
