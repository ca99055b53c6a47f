"""A store with one image, container records made as `run` makes them, and the CLI run on it.

Shared by the tests of the inspection verbs (test_inspect.py, test_ps.py, test_system.py);
nothing here boots a VM.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import ImageSpec, file, oci_layout_files, tar_bytes, write_tar

from hyperrun.containers import names, records
from hyperrun.store import Store

IMAGE_CONFIG = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1"],
                "WorkingDir": "/srv", "User": "app"}


def hyperrun(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperrun", *args], capture_output=True,
                          text=True, env={**os.environ, "HYPERRUN_ROOT": str(root)}, timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hyperrun: "), proc.stderr
    assert "hint:" in lines[0] and "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def store_with_image(tmp_path: Path) -> Path:
    """A store holding one image, busybox:latest, loaded through the CLI."""
    root = tmp_path / "store"
    layer = tar_bytes(file("bin/sh", "#!/bin/false\n", mode=0o755))
    archive = write_tar(oci_layout_files([(ImageSpec(layers=[layer], config=IMAGE_CONFIG),
                                           "busybox:latest")]), tmp_path / "image.tar")
    ok(hyperrun(root, "load", "-q", "-i", str(archive)))
    return root


def image_id(root: Path) -> str:
    return ok(hyperrun(root, "images", "-q", "--no-trunc")).strip()


def make(root: Path, name: str | None = None, *, exit_status: int | None = None,
         image: str = "busybox", image_id: str = "sha256:" + "0" * 64,
         command: tuple[str, ...] = ("echo", "hi"), **settings: object) -> records.Container:
    """A container record as `run` leaves it; exited with exit_status if given."""
    store = Store(root)
    s = records.Settings(**{"cmd": command, "cpus": 2, "memory_mib": 256, **settings})
    c = records.create(store, names.new_id(), name, image, image_id, command, False,
                       settings=s)
    if exit_status is not None:
        c = records.record_exit(store, c, exit_status)
    return c
