"""The probes of `hyperrun compare`: busybox shell run alike on the host, in a namespace
container and in a microVM, and the strict reading of what they print.

Every probe only reads, except `module` (loading a made-up module) and the allocation of
oom_script; those two are run only inside an instance, never on the host. The output is
`key=value` lines; an instance is untrusted, so the reader keeps only known keys, bounds
every value and escapes nothing here (the CLI escapes before printing).
"""

from __future__ import annotations

MAX_OUTPUT = 64 << 10  # what one probe run may print
MAX_VALUE = 300

# Read-only probes, in one shell run. `head -c` bounds what an instance could flood us with.
READ_SCRIPT = r"""
echo "kernel=$(uname -r)"
echo "procs=$(ls -d /proc/[0-9]* 2>/dev/null | wc -l)"
echo "pid1=$(head -c 64 /proc/1/comm 2>/dev/null)"
echo "nproc=$(nproc)"
echo "memtotal_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
if grep -qw hypervisor /proc/cpuinfo; then echo hypervisor=yes; else echo hypervisor=no; fi
if out=$(dmesg 2>&1); then
  echo "dmesg=readable, $(echo "$out" | wc -l) lines"
  echo "dmesg_kernel=$(echo "$out" | grep -m1 -o 'Linux version [^ ]*' | head -c 80)"
else
  echo "dmesg=refused: $(echo "$out" | head -1 | head -c 120)"
fi
if [ -r /proc/kallsyms ]; then
  echo "kallsyms_nonzero=$(awk '$1 !~ /^0+$/ {n++} END {print n+0}' /proc/kallsyms)"
  echo "kallsyms_stext=$(awk '$3 == "_stext" {print $1; exit}' /proc/kallsyms)"
  echo "syscalls=$(grep -c ' __x64_sys_' /proc/kallsyms)"
else
  echo "kallsyms_nonzero=absent"
fi
echo "partitions=$(awk 'NR > 2 && $4 != "" {printf "%s:%dMiB ", $4, $3 / 1024}' \
  /proc/partitions 2>/dev/null | head -c 200)"
echo "dev_entries=$(ls /dev | wc -l)"
echo "netifs=$(ls /sys/class/net 2>/dev/null | tr '\n' ' ' | head -c 200)"
echo "macs=$(cat /sys/class/net/*/address 2>/dev/null | grep -v '^00:00:00:00:00:00$' \
  | tr '\n' ' ' | head -c 200)"
if [ -e /proc/modules ]; then echo modules=supported; else echo modules=absent; fi
"""

# Changes kernel state (a module load attempt): only ever run inside an instance. The
# "module" is junk: a kernel that let the call through would reject it while parsing.
MODULE_SCRIPT = r"""
d=$(mktemp -d) && printf 'not a module' > "$d/probe.ko"
out=$(insmod "$d/probe.ko" 2>&1); st=$?
rm -rf "$d"
echo "module=status $st: $(echo "$out" | head -1 | head -c 120)"
"""

ALLOCATION_FACTOR = 3  # the allocation asks for up to this many times the limit, then stops


def oom_script(limit_mib: int) -> str:
    """Double a string until it holds ALLOCATION_FACTOR times the memory limit, and report
    how that ended: bounded, so it stops by itself where no limit bites."""
    target = limit_mib * ALLOCATION_FACTOR << 20
    return (
        f"awk 'BEGIN {{ s = \"x\"; while (length(s) < {target}) s = s s; "
        "print length(s) }' >/dev/null 2>/tmp/.oom-err; st=$?\n"
        'echo "oom_status=$st"\n'
        'echo "oom_error=$(head -c 120 /tmp/.oom-err | head -1)"; rm -f /tmp/.oom-err\n'
        "echo \"oom_kernel=$(dmesg 2>/dev/null | grep -i -m1 -o 'killed process [0-9]* "
        "([^)]*)' | head -c 100)\"\n"
        'echo "oom_shell_alive=yes"\n')


def parse(text: str, keys: frozenset[str]) -> dict[str, str]:
    """The known `key=value` lines of a probe run's output, each value bounded."""
    out: dict[str, str] = {}
    for line in text[:MAX_OUTPUT].splitlines():
        key, sep, value = line.partition("=")
        if sep and key in keys and key not in out:
            out[key] = value.strip()[:MAX_VALUE]
    return out


READ_KEYS = frozenset({
    "kernel", "procs", "pid1", "nproc", "memtotal_kib", "hypervisor", "dmesg", "dmesg_kernel",
    "kallsyms_nonzero", "kallsyms_stext", "syscalls", "partitions", "dev_entries", "netifs",
    "macs", "modules"})
MODULE_KEYS = frozenset({"module"})
OOM_KEYS = frozenset({"oom_status", "oom_error", "oom_kernel", "oom_shell_alive"})
