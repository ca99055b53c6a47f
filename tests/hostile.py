"""Hostile inputs (bombs, raw tar headers, layouts) and helpers for the tests of hostile images."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

from helpers import dump, hexof, sha256

from hyperrun.images.load import Loader
from hyperrun.images.store import ImageStore
from hyperrun.store import Store

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def leftovers(store: Store) -> list[str]:
    return sorted(p.name for p in store.tmp.iterdir() if p.name != "locks")


def hyperrun(root: Path, *args: str, env: dict[str, str] | None = None,
             **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperrun", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "HYPERRUN_ROOT": str(root), "PYTHONPATH": str(REPO),
                               "HYPERRUN_CONFIG": str(root / "no-config.yaml"), **(env or {})},
                          **kw)  # type: ignore[call-overload]


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 125, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hyperrun: ")]
    assert len(lines) == 1 and "(hint: " in lines[0], proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


BLOCK = 512
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def header(name: str, type_: bytes = tarfile.REGTYPE, size: int = 0, **fields: Any) -> bytes:
    """One 512-byte ustar header exactly as given (size may be anything, even a lie)."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.mode = type_, 0, 1_600_000_000, 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    buf = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    if len(buf) != BLOCK:
        raise ValueError("header() writes single-block names only")
    buf[124:136] = _number(size, 12)
    buf[148:156] = b"        "
    buf[148:155] = b"%06o\0" % sum(buf)  # checksum over the header with blank chksum field
    return bytes(buf[:155] + b" " + buf[156:])


def _number(value: int, digits: int) -> bytes:
    if 0 <= value < 8 ** (digits - 1):
        return b"%0*o\0" % (digits - 1, value)
    out = bytearray(value.to_bytes(digits, "big", signed=True))  # GNU base-256
    out[0] = 0x80 if value >= 0 else 0xFF
    return bytes(out)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def end() -> bytes:
    return b"\0" * (2 * BLOCK)


def pax(records: dict[str, str | bytes]) -> bytes:
    """A PAX extended header ('x') block with its records, padded."""
    body = b""
    for key, value in records.items():
        raw = value if isinstance(value, bytes) else value.encode()
        record = b" " + key.encode() + b"=" + raw + b"\n"
        length = len(record) + 1
        while len(str(length).encode()) + len(record) != length:
            length += 1
        body += str(length).encode() + record
    return header("././@PaxHeader", tarfile.XHDTYPE, len(body)) + pad(body)


def gzip_bomb(path: Path, inflated: int, name: str = "zeros") -> tuple[str, str]:
    """Write a gzip layer holding one file of `inflated` zero bytes; (digest, diff_id)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    plain = hashlib.sha256()
    packed = hashlib.sha256()
    zeros = b"\0" * (1 << 20)
    with open(path, "wb") as out:
        def put(data: bytes) -> None:
            plain.update(data)
            chunk = comp.compress(data)
            packed.update(chunk)
            out.write(chunk)

        put(header(name, size=inflated))
        left = inflated + (-inflated % BLOCK)
        while left:
            step = min(left, len(zeros))
            put(zeros[:step])
            left -= step
        put(end())
        tail = comp.flush()
        packed.update(tail)
        out.write(tail)
    return "sha256:" + packed.hexdigest(), "sha256:" + plain.hexdigest()


def config_for(diff_ids: list[str], architecture: str = "amd64") -> bytes:
    return dump({"architecture": architecture, "os": "linux", "config": {"Cmd": ["sh"]},
                 "rootfs": {"type": "layers", "diff_ids": diff_ids}})


def manifest_for(config: bytes, layers: list[tuple[bytes | Path, str]],
                 **overrides: Any) -> bytes:
    """An OCI manifest of config and (blob or blob file, media type) layers."""
    descs = []
    for blob, media in layers:
        data = blob.read_bytes() if isinstance(blob, Path) else blob
        descs.append({"mediaType": media, "digest": sha256(data), "size": len(data)})
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
           "layers": descs}
    doc.update(overrides)
    return dump(doc)


def layout(root: Path, top: list[dict[str, Any]], blobs: list[bytes | Path],
           ref: str | None = "hostile:latest") -> Path:
    """An OCI layout directory: index.json listing top, and the given blobs."""
    (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in blobs:
        data = blob.read_bytes() if isinstance(blob, Path) else blob
        (root / "blobs/sha256" / hexof(sha256(data))).write_bytes(data)
    if ref:
        for desc in top:
            desc.setdefault("annotations", {"org.opencontainers.image.ref.name": ref})
    (root / "index.json").write_bytes(dump({"schemaVersion": 2, "manifests": top}))
    return root


def image_layout(root: Path, layers: list[tuple[bytes | Path, str, str]],
                 ref: str | None = "hostile:latest") -> Path:
    """A one-image layout from (blob, media type, diff_id) layers."""
    config = config_for([diff_id for _, _, diff_id in layers])
    manifest = manifest_for(config, [(blob, media) for blob, media, _ in layers])
    desc = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}
    return layout(root, [desc], [config, manifest, *[blob for blob, _, _ in layers]], ref)


def layer_images(tmp_path: Path, layer: bytes) -> tuple[ImageStore, Path]:
    """A store holding an image of one (gzip) layer, and the image's rootfs directory."""
    blob = gzip.compress(layer, mtime=0)
    path = image_layout(tmp_path / "layout", [(blob, LAYER_GZIP, sha256(layer))])
    images = ImageStore(Store(tmp_path / "store"))
    images.store.ensure()
    Loader(images).load(path)
    return images, tmp_path / "rootfs"


def build(images: ImageStore, dest: Path) -> None:
    images.build_rootfs(images.get("hostile:latest"), dest)
