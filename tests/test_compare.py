"""`hyperrun compare` without a VM: the probes' reader, the OCI config, the table's rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hyperrun.bench import compare_rows, fleet, probes, runc
from hyperrun.bench.fleet import FleetError
from hyperrun.cli import compare as cli_compare
from hyperrun.errors import EXIT_USAGE
from hyperrun.store import Store

COLUMNS = ("host", "runc", "microvm")


def test_the_reader_keeps_known_keys_bounded_and_the_first_of_each() -> None:
    text = ("kernel=6.1\nkernel=evil\nnot-a-key=1\nprocs=" + "9" * 10_000 + "\nnoise\n"
            "pid1=sh=x\n")
    out = probes.parse(text, probes.READ_KEYS)
    assert out["kernel"] == "6.1" and "not-a-key" not in out
    assert len(out["procs"]) == probes.MAX_VALUE and out["pid1"] == "sh=x"
    flood = "kernel=1\n" + "x" * probes.MAX_OUTPUT + "\nnproc=2\n"
    assert "nproc" not in probes.parse(flood, probes.READ_KEYS)  # past the bound: ignored


def test_the_allocation_is_bounded_by_a_multiple_of_the_limit() -> None:
    script = probes.oom_script(64)
    assert str(64 * probes.ALLOCATION_FACTOR << 20) in script
    for key in probes.OOM_KEYS:
        assert f"{key}=" in script


def test_the_runc_config_limits_cpu_and_memory_and_withholds_module_loading() -> None:
    doc = runc.config(Path("/r"), ["true"], cpus=2, memory_mib=64, cgroup="/hyperrun-x")
    linux = doc["linux"]
    assert isinstance(linux, dict)
    res = linux["resources"]
    assert res["memory"]["limit"] == 64 << 20 and res["cpu"]["quota"] == 2 * runc.CPU_PERIOD
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount"}
    process = doc["process"]
    assert isinstance(process, dict)
    caps = process["capabilities"]["bounding"]
    assert "CAP_SYS_MODULE" not in caps and "CAP_SYSLOG" not in caps and "CAP_CHOWN" in caps
    assert doc["root"] == {"path": "/r", "readonly": True}


def _raw() -> dict[str, dict[str, object]]:
    host = {"kernel": "6.18", "procs": "130", "pid1": "init", "nproc": "2",
            "memtotal_kib": "24000000", "hypervisor": "yes", "dmesg": "readable, 9 lines",
            "dmesg_kernel": "Linux version 6.18", "kallsyms_nonzero": "100",
            "kallsyms_stext": "ffffffff81000000", "syscalls": "472",
            "partitions": "vda:262144MiB", "dev_entries": "100", "netifs": "eth0 lo",
            "macs": "52:54:00:00:00:01", "modules": "absent", "memory_pss": 1 << 20,
            "memory_rss": 2 << 20, "disk": 0, "startup_median": 0.001}
    container = {**host, "procs": "4", "pid1": "sleep", "dmesg": "refused: EPERM",
                 "dmesg_kernel": None, "kallsyms_nonzero": "0",
                 "kallsyms_stext": "0000000000000000", "netifs": "lo", "macs": "",
                 "module": "status 1: EPERM", "oom_status": "137", "cgroup_oom_kills": "1",
                 "alive_after_oom": True, "host_oom_lines": ["Killed process 1 (awk)"],
                 "disk": 20480, "startup_median": 0.04}
    vm = {**container, "kernel": "6.1", "nproc": "1", "memtotal_kib": "117000",
          "dmesg": "readable, 200 lines", "dmesg_kernel": "Linux version 6.1",
          "kallsyms_nonzero": "absent", "syscalls": None, "partitions": "vda:2048MiB",
          "netifs": "eth0 lo", "macs": "52:54:00:12:34:56", "host_oom_lines": [],
          "oom_kernel": "Killed process 70 (awk)", "memory_pss": 80 << 20, "disk": 344064,
          "startup_median": 3.0}
    return {"host": host, "runc": container, "microvm": vm}


def test_every_row_is_answered_or_skipped_with_a_reason_and_has_a_verdict() -> None:
    rows = compare_rows.rows(_raw(), 128)
    assert [r["probe"] for r in rows] == [f.__name__ for f in compare_rows.ROWS]
    for row in rows:
        assert row["verdict"], row
        for c in COLUMNS:
            assert row["values"][c] or row["skipped"].get(c), (row["probe"], c)
    by = {r["probe"]: r for r in rows}
    assert set(by["module"]["skipped"]) == {"host"} and set(by["oom"]["skipped"]) == {"host"}
    assert "not the host" in by["kernel"]["values"]["microvm"]
    assert "runs its own" in by["kernel"]["verdict"]
    assert "VISIBLE in runc" in by["devices"]["verdict"]  # the host's vda:262144MiB
    assert "not there in the microVM" in by["devices"]["verdict"]  # its own, smaller vda


def test_the_table_and_markdown_show_every_column_of_every_row() -> None:
    raw = _raw()
    report = {"settings": {"image": "busybox", "cpus": 1, "memory_mib": 128, "runs": 1},
              "environment": {"accelerator": "tcg", "host_cpu": "", "host_cores": 2,
                              "qemu_version": "7.2", "guest_kernel_version": "6.1",
                              "runc_version": "runc version 1", "loadavg_before": [0.5]},
              "columns": list(COLUMNS), "rows": compare_rows.rows(raw, 128)}
    md = cli_compare.markdown(report)
    assert len(md) == 4 + len(compare_rows.ROWS)
    header, rule, *body = md[2:]
    assert header.count(" | ") == len(COLUMNS) + 2 and rule.count("---") == len(COLUMNS) + 3
    assert all(line.count(" | ") >= len(COLUMNS) + 2 for line in body)
    text = "\n".join(cli_compare.table(report))
    assert text.count("verdict") == len(compare_rows.ROWS) and "skipped: " in text


def test_a_dead_compares_directory_is_swept(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.ensure()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = store.tmp / f"{runc.PREFIX}{dead}-abcdef"
    (left / "rootfs").mkdir(parents=True)
    mine = store.tmp / f"{runc.PREFIX}{__import__('os').getpid()}-abcdef"
    mine.mkdir()
    runc.sweep(store)
    assert not left.exists() and mine.exists()


def test_bad_counts_are_usage_errors() -> None:
    proc = subprocess.run([sys.executable, "-m", "hyperrun", "compare", "--runs", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == EXIT_USAGE and "--runs" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hyperrun", "bench", "density", "--count",
                           "0"], capture_output=True, text=True)
    assert proc.returncode == EXIT_USAGE and "--count" in proc.stderr


def test_what_an_instance_prints_is_read_only_up_to_a_bound() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    status, out, err = fleet.capture(["sh", "-c", "echo hi; echo oops >&2; exit 3"], env)
    assert (status, out, err) == (3, b"hi\n", b"oops\n")
    with pytest.raises(FleetError, match="over 4096 bytes"):
        fleet.capture(["sh", "-c", "yes"], env, limit=4096)
    with pytest.raises(FleetError, match="took over"):
        fleet.capture(["sleep", "5"], env, timeout=0.2)
