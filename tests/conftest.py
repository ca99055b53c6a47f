"""Shared fixtures."""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ImageSpec, file, oci_layout_files, tar_bytes, write_tar
from registry_fixtures import *  # noqa: F401,F403

from hyperrun.images.store import ImageStore
from hyperrun.store import Store

# ---- image store fixtures (tests/test_images.py, tests/test_layers.py) ----------------------
# Tar, docker-save and OCI-layout builders live in tests/helpers.py.


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty hyperrun store in a temporary directory."""
    s = Store(tmp_path / "store")
    s.ensure()
    return s


@pytest.fixture
def images(store: Store) -> ImageStore:
    return ImageStore(store)

# ---- end of image store fixtures -----------------------------------------------------------

# ---- VM fixtures: one store, kernel, initrd and set of images per test session --------------

REPO = Path(__file__).resolve().parent.parent


def _build(script: str) -> Path:
    out = subprocess.run(["bash", str(REPO / script)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@functools.cache
def monitor_binary() -> Path:
    """hyperrun-monitor, built once per session (monitor/build caches it by content)."""
    return _build("monitor/build")


def _first_layer(oci_tar: Path) -> bytes:
    """The uncompressed first layer of the single image in an OCI layout tar."""
    with tarfile.open(oci_tar) as tar:
        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()

        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        return gzip.decompress(blob(manifest["layers"][0]["digest"]))


APP_PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
              "app:x:1000:1000:app:/home/app:/bin/sh\n")
APP_GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"


@dataclass(frozen=True)
class VmEnv:
    """A store with boot assets and test images, and a way to run the CLI against it."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "HYPERRUN_ROOT": str(self.root)}

    def hyperrun(self, *args: str, input: bytes | None = None,
                 timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "hyperrun", *args], input=input,
                              capture_output=True, env=self.env, timeout=timeout)

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess[bytes]:
        return self.hyperrun("run", "--rm", *args, **kw)


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> VmEnv:
    """Boot assets and images shared by every VM test (built once per session).

    The store lives under /var/tmp, not pytest's 0700 temp dir, because QEMU runs as an
    unprivileged user under qemu:///system and must reach the disks and sockets.
    """
    root = Path(tempfile.mkdtemp(prefix="hyperrun-test-", dir="/var/tmp"))
    root.chmod(0o711)
    try:
        store = Store(root)
        store.ensure()
        shutil.copy(_build("kernel/build"), store.boot / "vmlinuz")
        shutil.copy(_build("initrd/build"), store.boot / "initrd.img")
        shutil.copy(monitor_binary(), store.boot / "hyperrun-monitor")
        work = tmp_path_factory.mktemp("images")
        busybox = work / "busybox.tar"
        subprocess.run([sys.executable, str(REPO / "scripts/make-busybox-image"), str(busybox)],
                       check=True)
        extra = tar_bytes(
            file("etc/passwd", APP_PASSWD), file("etc/group", APP_GROUP),
            file("srv/data/hello.txt", "hello from the image\n"),
        )
        app = ImageSpec(layers=[_first_layer(busybox), extra], config={
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ['echo "user=$(id -u):$(id -g) groups=$(id -G) pwd=$(pwd) mode=$MODE"'],
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "MODE=image"],
            "WorkingDir": "/srv/data",
            "User": "app",
        })
        app_tar = write_tar(oci_layout_files([(app, "app:latest")]), work / "app.tar")
        env = VmEnv(root)
        for archive in (busybox, app_tar):
            loaded = env.hyperrun("load", "-q", "-i", str(archive))
            assert loaded.returncode == 0, loaded.stderr.decode()
        yield env
    finally:
        shutil.rmtree(root, ignore_errors=True)
