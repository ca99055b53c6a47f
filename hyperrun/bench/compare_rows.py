"""The rows of `hyperrun compare`'s table: from what each column measured (compare.py's
raw answers) to one value per column, or the reason it was skipped, and a verdict.

Each row names the line of the founding article's Container / VM / Hyper table it puts a
number on (`aspect`). The values are untrusted text from the instances; the CLI escapes
them before printing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hyperrun.bench.probes import ALLOCATION_FACTOR

MIB = 1 << 20
COLUMN_TEXT = {
    "host": "the host: the image's busybox run as a plain host process",
    "runc": "a runc namespace container from an OCI bundle of the image, cgroup limits",
    "microvm": "a hyperrun microVM of the image (hyperrun run)",
}
NOT_ON_HOST = "not attempted on the host: it would change the host's kernel state"

Raw = dict[str, dict[str, Any]]
Row = dict[str, Any]


def _row(probe: str, aspect: str, title: str, values: Mapping[str, str | None],
         verdict: str, skipped: dict[str, str] | None = None) -> Row:
    return {"probe": probe, "aspect": aspect, "title": title, "values": dict(values),
            "skipped": skipped or {}, "verdict": verdict}


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f} MiB"


def _shares(raw: Raw, key: str, column: str) -> bool:
    value = raw[column].get(key)
    return value is not None and value == raw["host"].get(key)


def kernel(raw: Raw, limit: int) -> Row:
    host = raw["host"].get("kernel", "?")
    values = {"host": host}
    for c in ("runc", "microvm"):
        k = raw[c].get("kernel", "?")
        values[c] = f"{k} ({'the host' if k == host else 'not the host'}'s)"
    runc = "shares" if _shares(raw, "kernel", "runc") else "does not share"
    vm = "shares it" if _shares(raw, "kernel", "microvm") else "runs its own"
    verdict = f"runc {runc} the host's kernel; the microVM {vm}"
    return _row("kernel", "Isolation", "kernel release", values, verdict)


def processes(raw: Raw, limit: int) -> Row:
    host_pid1 = raw["host"].get("pid1")
    values, hidden = {}, {}
    for c in ("host", "runc", "microvm"):
        r = raw[c]
        hidden[c] = c != "host" and r.get("pid1") != host_pid1
        values[c] = (f"{r.get('procs', '?')} processes, PID 1 is {r.get('pid1') or '?'}"
                     + ("" if c == "host" else
                        "; host's hidden" if hidden[c] else "; host's VISIBLE"))
    both = hidden["runc"] and hidden["microvm"]
    verdict = ("neither instance sees the host's processes (a PID namespace in both)" if both
               else "an instance sees the host's processes")
    return _row("processes", "Isolation", "processes visible", values, verdict)


def nproc(raw: Raw, limit: int) -> Row:
    values = {c: str(raw[c].get("nproc", "?")) for c in raw}
    host = raw["host"].get("nproc")
    runc_all = raw["runc"].get("nproc") == host
    verdict = ((f"runc reports all {host} host CPUs despite its CPU quota; " if runc_all else
                "runc reports its CPU limit; ")
               + f"the microVM reports its {raw['microvm'].get('nproc', '?')} vCPU(s)")
    return _row("nproc", "Isolation", "nproc", values, verdict)


def meminfo(raw: Raw, limit: int) -> Row:
    def total(c: str) -> int | None:
        kib = raw[c].get("memtotal_kib", "")
        return int(kib) * 1024 if str(kib).isdigit() else None

    values = {c: f"MemTotal {_mib(total(c))}" for c in raw}
    runc_host = total("runc") == total("host")
    verdict = ((f"runc shows the host's memory, not its {limit} MiB limit; " if runc_host
                else "runc shows its limit; ")
               + f"the microVM shows its own {limit} MiB less the guest kernel's share")
    return _row("meminfo", "Isolation", "/proc/meminfo", values, verdict)


def _fate(r: dict[str, Any]) -> str:
    status = r.get("oom_status", "")
    if status == "137":
        return "the allocating process was SIGKILLed (status 137)"
    if status == "0":
        return "the allocation succeeded"
    return f"the allocation failed (status {status or '?'}: {r.get('oom_error') or '-'})"


def oom(raw: Raw, limit: int) -> Row:
    runc, vm = raw["runc"], raw["microvm"]
    host_lines_runc = runc.get("host_oom_lines") or []
    host_lines_vm = vm.get("host_oom_lines") or []
    values: dict[str, str | None] = {
        "host": None,
        "runc": (f"{_fate(runc)} by the host kernel's cgroup OOM killer "
                 f"(cgroup oom_kill {runc.get('cgroup_oom_kills', '?')}); container "
                 f"{'still up' if runc.get('alive_after_oom') else 'gone'}; host log: "
                 f"{host_lines_runc[0] if host_lines_runc else 'no new OOM line'}"),
        "microvm": (f"{_fate(vm)}; guest kernel log: {vm.get('oom_kernel') or 'nothing'}; VM "
                    f"{'still up' if vm.get('alive_after_oom') else 'gone'}; host log: "
                    f"{len(host_lines_vm)} new OOM line(s); QEMU RSS "
                    f"{_mib(vm.get('qemu_rss'))} idle, {_mib(vm.get('qemu_rss_after_oom'))} "
                    "after"),
    }
    verdict = ("in runc the host's kernel kills and logs it; in the microVM the guest's kernel "
               "does, and the host sees only QEMU's RSS grow toward the guest's size"
               if host_lines_runc
               and not host_lines_vm else "see the values: the host's log is the witness")
    return _row("oom", "Isolation",
                f"allocate {ALLOCATION_FACTOR}x past a {limit} MiB limit", values, verdict,
                {"host": "not run on the host: no limit applies to a host process, and the "
                         "allocation would press on the host's memory"})


def hypervisor(raw: Raw, limit: int) -> Row:
    values = {c: str(raw[c].get("hypervisor", "?")) for c in raw}
    verdict = (f"runc sees the host's CPU flags (hypervisor: {values['runc']}); the microVM "
               f"sees its virtual CPU's (hypervisor: {values['microvm']})")
    return _row("hypervisor", "Isolation", "`hypervisor` CPU flag", values, verdict)


def dmesg(raw: Raw, limit: int) -> Row:
    def text(c: str) -> str:
        r = raw[c]
        whose = r.get("dmesg_kernel")
        return f"{r.get('dmesg', '?')}" + (f" ({whose})" if whose else "")

    values = {c: text(c) for c in raw}
    host_version = f"Linux version {raw['host'].get('kernel', '?')}"
    runc_sees = raw["runc"].get("dmesg_kernel") == host_version
    vm_sees = raw["microvm"].get("dmesg_kernel") == host_version
    verdict = (f"the host's log is {'VISIBLE' if runc_sees else 'refused'} in runc and "
               f"{'VISIBLE' if vm_sees else 'not there'} in the microVM"
               + (" (it reads its own guest kernel's)" if raw["microvm"].get("dmesg_kernel")
                  and not vm_sees else ""))
    return _row("dmesg", "Isolation", "kernel log (dmesg)", values, verdict)


def kallsyms(raw: Raw, limit: int) -> Row:
    host_stext = raw["host"].get("kallsyms_stext")

    def text(c: str) -> str:
        r = raw[c]
        if r.get("kallsyms_nonzero") == "absent":
            return "no /proc/kallsyms"
        return (f"{r.get('kallsyms_nonzero', '?')} non-zero addresses, "
                f"_stext {r.get('kallsyms_stext', '?')}")

    values = {c: text(c) for c in raw}
    leaks = {c: raw[c].get("kallsyms_stext") == host_stext
             and raw[c].get("kallsyms_nonzero") not in ("0", "absent") for c in ("runc", "microvm")}
    verdict = (f"host kernel addresses {'VISIBLE' if leaks['runc'] else 'hidden'} in runc, "
               f"{'VISIBLE' if leaks['microvm'] else 'absent'} in the microVM")
    return _row("kallsyms", "Isolation", "/proc/kallsyms addresses", values, verdict)


def devices(raw: Raw, limit: int) -> Row:
    host_disks = set(str(raw["host"].get("partitions", "")).split())

    def seen(c: str) -> bool:
        return bool(host_disks & set(str(raw[c].get("partitions", "")).split()))

    values = {c: f"/proc/partitions: {raw[c].get('partitions') or 'none'}; /dev: "
                 f"{raw[c].get('dev_entries', '?')} entries" for c in raw}
    verdict = (f"the host's disks are {'VISIBLE' if seen('runc') else 'hidden'} in runc "
               f"(/proc/partitions is the host kernel's) and "
               f"{'VISIBLE' if seen('microvm') else 'not there'} in the microVM")
    return _row("devices", "Isolation", "host devices", values, verdict)


def network(raw: Raw, limit: int) -> Row:
    host_macs = set(str(raw["host"].get("macs", "")).split())

    def seen(c: str) -> bool:
        return bool(host_macs & set(str(raw[c].get("macs", "")).split()))

    values = {c: f"{raw[c].get('netifs') or 'none'}"
                 + ("" if c == "host" else f"; host MACs {'VISIBLE' if seen(c) else 'not seen'}")
              for c in raw}
    verdict = ("neither sees the host's interfaces (runc: its own network namespace; the "
               "microVM: its own virtual NIC)" if not seen("runc") and not seen("microvm")
               else "an instance sees the host's interfaces")
    return _row("network", "Isolation", "network interfaces", values, verdict)


def module(raw: Raw, limit: int) -> Row:
    values: dict[str, str | None] = {"host": None, "runc": raw["runc"].get("module", "?"),
                                     "microvm": raw["microvm"].get("module", "?")}
    verdict = ("runc's attempt is answered by the host's kernel; the microVM's by the guest's "
               "(whatever it allowed would load into the guest kernel only)")
    return _row("module", "Isolation", "load a kernel module", values, verdict,
                {"host": f"{NOT_ON_HOST} (its /proc/modules: "
                         f"{raw['host'].get('modules', '?')})"})


def syscalls(raw: Raw, limit: int) -> Row:
    def text(c: str) -> str:
        r = raw[c]
        count = r.get("syscalls")
        return (f"kernel {r.get('kernel', '?')}: "
                + (f"{count} syscall entry points" if count else "count not exposed (no kallsyms)"))

    values = {c: text(c) for c in raw}
    verdict = ("runc's workload calls straight into the host kernel; the microVM's into a "
               "separate guest kernel, and only QEMU's calls reach the host's")
    return _row("syscalls", "Isolation", "system-call surface", values, verdict)


def startup(raw: Raw, limit: int) -> Row:
    values = {c: f"{raw[c]['startup_median'] * 1e3:.0f} ms" for c in raw}
    vm, rc = raw["microvm"]["startup_median"], raw["runc"]["startup_median"]
    verdict = f"the microVM starts {vm / rc:.0f}x slower than runc" if rc else "-"
    return _row("startup", "Boot", "start-up, median (host: busybox true; runc: runc run "
                "true; microVM: run --rm true)", values, verdict)


def memory(raw: Raw, limit: int) -> Row:
    values = {c: f"PSS {_mib(raw[c].get('memory_pss'))} (RSS {_mib(raw[c].get('memory_rss'))})"
              for c in raw}
    vm, rc = raw["microvm"].get("memory_pss") or 0, raw["runc"].get("memory_pss") or 0
    verdict = (f"an idle microVM costs the host {vm / rc:.0f}x an idle runc container"
               if rc else "-")
    return _row("memory", "Performance", "host memory per idle instance", values, verdict)


def disk(raw: Raw, limit: int) -> Row:
    values = {c: f"{(raw[c].get('disk') or 0) >> 10} KiB" for c in raw}
    return _row("disk", "Image size", "disk per instance beyond the shared image", values,
                "runc: its bundle's config and state (read-only root); microVM: its qcow2 "
                "overlay and records")


ROWS: tuple[Callable[[Raw, int], Row], ...] = (
    kernel, syscalls, processes, nproc, meminfo, oom, hypervisor, dmesg, kallsyms, devices,
    network, module, startup, memory, disk)


def rows(raw: Raw, limit: int) -> list[Row]:
    """Every row, each value answered or its column skipped with a reason."""
    return [make(raw, limit) for make in ROWS]
