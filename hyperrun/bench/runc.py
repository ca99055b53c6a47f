"""Namespace containers with runc, for `hyperrun compare`'s middle column.

An OCI bundle is made from an image's rootfs (applied from hyperrun's own layer store) in
a temporary directory of store.tmp named for this process. runc keeps its state under that
directory too (`runc --root`), and the containers' cgroups are named after it, so
everything one compare made is found from that one directory: `sweep` deletes the
containers of a killed compare's directory, then the directory. The CPU and memory
limits are cgroup limits, as docker's `--cpus` and `--memory` set them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hyperrun import capabilities, subproc
from hyperrun.bench.fleet import capture
from hyperrun.errors import HyperrunError
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore
from hyperrun.store import Store, owned_prefix, process_alive

PREFIX = "compare-"
CPU_PERIOD = 100_000  # microseconds, the CFS period docker uses for --cpus
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_MEMORY = CGROUP_ROOT / "memory"
TIMEOUT = 120.0
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


class RuncUnavailable(HyperrunError):
    pass


def _mounts() -> list[dict[str, object]]:
    """runc's own default mounts (`runc spec`), and a tmpfs /tmp over the read-only root."""
    nosuid = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nosuid, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid, "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*nosuid, "relatime", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=16m"]},
    ]


def config(rootfs: Path, args: Sequence[str], *, cpus: int, memory_mib: int,
           cgroup: str) -> dict[str, object]:
    """An OCI runtime config: docker's default capabilities, runc's default namespaces,
    masked paths and devices, a read-only root, and the CPU and memory limits."""
    caps = sorted(f"CAP_{c}" for c in capabilities.DEFAULT)
    limit = memory_mib << 20
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args),
            "env": [PATH], "cwd": "/", "noNewPrivileges": True,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "compare",
        "mounts": _mounts(),
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                # Swap as large as the limit: no swap (there is none here either).
                "memory": {"limit": limit, "swap": limit},
                "cpu": {"quota": cpus * CPU_PERIOD, "period": CPU_PERIOD},
            },
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


@dataclass
class Bundles:
    """One compare's directory: the image's rootfs, runc's state, one bundle per container."""

    dir: Path
    rootfs: Path
    cpus: int
    memory_mib: int

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state), *args]

    def bundle(self, name: str, args: Sequence[str]) -> tuple[str, Path]:
        """A fresh container id and its bundle directory, running args."""
        cid = f"{self.dir.name}-{name}"
        path = self.dir / name
        path.mkdir()
        doc = config(self.rootfs, args, cpus=self.cpus, memory_mib=self.memory_mib,
                     cgroup=f"/hyperrun-{cid}")
        (path / "config.json").write_text(json.dumps(doc, indent=1))
        return cid, path

    def run(self, name: str, args: Sequence[str]) -> float:
        """Run a container to its end (create, start, wait, delete): its wall time."""
        cid, path = self.bundle(name, args)
        start = time.monotonic()
        subproc.run(self._runc("run", "--bundle", str(path), cid))
        return time.monotonic() - start

    @contextlib.contextmanager
    def detached(self, name: str, args: Sequence[str]) -> Iterator[str]:
        """A container running args in the background, deleted on leaving."""
        cid, path = self.bundle(name, args)
        argv = [subproc.resolve("runc"), *self._runc("run", "--detach", "--bundle",
                                                      str(path), cid)[1:]]
        # Not subproc.run: the container inherits runc's stdio and would hold a pipe open.
        errors = path / "runc.err"
        with errors.open("wb") as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, env=subproc.environment(), cwd="/",
                                  timeout=TIMEOUT, check=False)
        try:
            if proc.returncode != 0:
                text = errors.read_text(errors="replace")[-300:].strip()
                raise HyperrunError(f"runc could not start a container: {text}",
                                    hint="see `runc --version`; runc needs root and cgroups")
            yield cid
        finally:
            with contextlib.suppress(HyperrunError):
                subproc.run(self._runc("delete", "--force", cid))

    def exec(self, cid: str, script: str) -> str:
        """Run a shell script in a running container; its standard output, bounded."""
        argv = [subproc.resolve("runc"), *self._runc("exec", cid, "sh", "-c", script)[1:]]
        status, out, err = capture(argv, subproc.environment(), timeout=TIMEOUT, cwd="/")
        if status != 0:
            raise HyperrunError(f"runc exec exited with status {status}: "
                                f"{err.decode(errors='replace').strip()[-200:]}",
                                hint="see `runc --version`")
        return out.decode(errors="replace")

    def pids(self, cid: str) -> list[int]:
        """The host pids of a running container's processes."""
        out = subproc.run(self._runc("ps", "--format", "json", cid)).stdout
        return [int(p) for p in json.loads(out or b"[]") if isinstance(p, int)]

    def memory_cgroup(self, cid: str) -> Path:
        return CGROUP_MEMORY / f"hyperrun-{cid}"


def available() -> str | None:
    """runc's version line, or None when it is not installed."""
    try:
        return subproc.run(["runc", "--version"]).stdout.decode().splitlines()[0]
    except (HyperrunError, IndexError):
        return None


def _remove(directory: Path) -> None:
    """Delete the containers whose state is under directory (their cgroups go with them),
    then the directory."""
    state = directory / "state"
    if state.is_dir():
        with contextlib.suppress(HyperrunError):
            for cid in subproc.run(["runc", "--root", str(state), "list", "-q"]).stdout.split():
                with contextlib.suppress(HyperrunError):
                    subproc.run(["runc", "--root", str(state), "delete", "--force",
                                 cid.decode()])
    shutil.rmtree(directory, ignore_errors=True)


def _dead_owner(name: str) -> bool:
    """Whether a `compare-<pid>-...` name's process is gone."""
    pid = name[len(PREFIX):].partition("-")[0]
    return pid.isdigit() and not process_alive(int(pid))


def _in_use(directory: Path) -> bool:
    """Whether a process names directory on its command line: a runc the dead compare
    started may still be finishing; the next sweep takes the directory."""
    needle = str(directory).encode()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes():
                return True
    return False


def _sweep_cgroups() -> None:
    """Kill what is left in cgroups of dead compares (their state gone), and remove them.
    The names are ours: `hyperrun-compare-<pid>-...` in every hierarchy."""
    for group in CGROUP_ROOT.glob(f"*/hyperrun-{PREFIX}*-*"):
        if not _dead_owner(group.name.removeprefix("hyperrun-")):
            continue
        with contextlib.suppress(OSError, ValueError):
            for pid in (group / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):  # the killed processes leave the cgroup as they exit
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)


def sweep(store: Store) -> None:
    """Delete the containers and directories of compares that died without cleaning up."""
    for entry in store.tmp.glob(f"{PREFIX}*-*"):
        if _dead_owner(entry.name) and not _in_use(entry):
            _remove(entry)
    _sweep_cgroups()


@contextlib.contextmanager
def bundles(store: Store, image: Image, *, cpus: int, memory_mib: int) -> Iterator[Bundles]:
    """A compare's directory with image's rootfs applied, removed on every exit path."""
    if available() is None:
        raise RuncUnavailable("runc is not installed",
                              hint="apt-get install runc (or run scripts/setup)")
    store.ensure()
    sweep(store)  # before making ours: store.tempdir's own sweep would skip runc's delete
    path = store.tmp / f"{owned_prefix(PREFIX)}{secrets.token_hex(3)}"
    path.mkdir(mode=0o700)
    result = Bundles(path, path / "rootfs", cpus, memory_mib)
    try:
        ImageStore(store).build_rootfs(image, result.rootfs)
        yield result
    finally:
        _remove(path)
