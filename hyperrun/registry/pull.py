"""`hyperrun pull`: from a reference to an image in the store, through a registry.

Layers download in parallel, each into store.tmp while its sha256 and size are checked,
then its uncompressed digest against the config's diff_id, and only then are they moved
into store.blobs. A per-blob lock makes concurrent pulls download a blob once; a blob
already in the store is never fetched again, which is also how an interrupted pull resumes.
The image itself (manifest, config, tags) is committed by ImageStore.add_pulled.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from hyperrun import config as config_mod
from hyperrun import reference as references
from hyperrun.config import Config
from hyperrun.digest import Hasher, sha256
from hyperrun.errors import HyperrunError, InvalidImage, RegistryError, Unauthorized
from hyperrun.images import manifest as manifests
from hyperrun.images.compression import LayerDigest, layer_diff_id
from hyperrun.images.limits import SizeBudget
from hyperrun.images.load import Loader
from hyperrun.images.manifest import Descriptor, Index, Manifest, Platform
from hyperrun.images.model import Image
from hyperrun.images.store import ImageStore
from hyperrun.images.validate import parse_config
from hyperrun.log import log
from hyperrun.reference import Reference
from hyperrun.registry import answers, credentials, downloads
from hyperrun.registry.client import Registry
from hyperrun.registry.downloads import Cancelled, blob_lock
from hyperrun.registry.manifests import ACCEPT
from hyperrun.registry.progress import PullProgress
from hyperrun.store import Store

DOWNLOAD_WORKERS = 3  # docker's max-concurrent-downloads
BLOB_ATTEMPTS = 3
MIRRORED_DOMAIN = references.DEFAULT_DOMAIN  # docker applies mirrors to Docker Hub only
_MALFORMED = "the registry serves a malformed image; nothing was stored"
_BAD_DATA = "the registry served corrupt or tampered data; nothing of it was stored"


@dataclass(frozen=True)
class PullResult:
    image: Image
    reference: Reference
    digest: str  # what the registry calls the image: the index or manifest digest
    downloaded: int  # layers fetched by this pull
    updated: bool  # the reference now names another image than before

    @property
    def status(self) -> str:
        """docker's closing `Status:` line."""
        what = "Downloaded newer image" if self.updated else "Image is up to date"
        return f"Status: {what} for {self.reference.familiar}"


def pull(store: Store, text: str, *, progress: PullProgress, platform: Platform | None = None,
         config: Config | None = None) -> PullResult:
    """Pull text (a reference) into the store for platform (default: this host's)."""
    ref = references.parse(text)
    cfg = config if config is not None else config_mod.load()
    want = platform or Platform.host()
    store.ensure()
    downloads.sweep(store)  # what killed pulls left in store.tmp
    progress.message(f"{ref.digest or ref.tag}: Pulling from {ref.path}")
    endpoints: list[str | None] = []
    if ref.domain == MIRRORED_DOMAIN:
        endpoints += list(cfg.registry(ref.domain).mirrors)
    endpoints.append(None)
    for endpoint in endpoints:
        host = credentials.registry_host(endpoint) if endpoint else ref.domain
        with Registry(ref.domain, cfg, credentials.lookup(host), endpoint=endpoint) as reg:
            try:
                result = _Puller(store, reg, ref, want, progress,
                                 explicit=platform is not None).run()
            except RegistryError as exc:
                if endpoint is None or isinstance(exc, Unauthorized):
                    raise
                log.debug("mirror %s failed (%s); trying the next", endpoint, exc.message)
                continue
        progress.finish()
        # Like docker's extraction step: the image is ready to run once the pull returns,
        # so the first `run` does not pay for unpacking.
        ImageStore(store).base_disk(result.image)
        progress.message(f"Digest: {result.digest}")
        progress.message(result.status)
        return result
    raise AssertionError("unreachable: the registry itself is the last endpoint")


class _Puller:
    def __init__(self, store: Store, reg: Registry, ref: Reference, want: Platform,
                 progress: PullProgress, explicit: bool) -> None:
        self.store = store
        self.reg = reg
        self.ref = ref
        self.want = want
        self.progress = progress
        self.explicit = explicit
        self.what = ref.familiar
        self.cancel = threading.Event()
        # Every layer's inflated bytes count against one limit for the whole image.
        self.budget = SizeBudget(self.what)

    def run(self) -> PullResult:
        body, top_digest, manifest = self._manifest()
        config_bytes = self._small_blob(manifest.config, manifests.MAX_CONFIG_BYTES)
        diff_ids = self._check_config(config_bytes, manifest)
        images = ImageStore(self.store)
        before = _current(images, str(self.ref))
        sizes, downloaded = self._layers(manifest, diff_ids)
        if self.ref.digest:
            tags: tuple[Reference, ...] = (Reference(self.ref.domain, self.ref.path, None,
                                                     self.ref.digest),)
        else:
            tags = (self.ref, Reference(self.ref.domain, self.ref.path, None, top_digest))
        image = Loader(images).add_pulled(body, config_bytes, tags, sizes)
        return PullResult(image, self.ref, top_digest, downloaded, before != image.id)

    # ---- manifests -----------------------------------------------------------------------

    def _manifest(self) -> tuple[bytes, str, Manifest]:
        repo = self.ref.path
        body, ctype = self.reg.manifest(repo, self.ref.digest or self.ref.tag or "latest",
                                        ACCEPT, manifests.MAX_MANIFEST_BYTES)
        top = sha256(body)
        if self.ref.digest and top != self.ref.digest:
            raise InvalidImage(f"{self.what}: the registry sent a manifest with digest {top}",
                               hint="the registry or something in between is misbehaving")
        doc = manifests.parse(body, ctype, self.what)
        depth = 0
        while isinstance(doc, Index):
            depth += 1
            manifests.check_depth(depth, self.what)
            desc = manifests.select(doc, self.want, self.what)
            body, ctype = self.reg.manifest(repo, desc.digest, ACCEPT,
                                            manifests.MAX_MANIFEST_BYTES)
            _verify(body, desc, f"{self.what}: manifest {desc.digest[:19]}")
            doc = manifests.parse(body, desc.media_type, self.what)
        return body, top, doc

    def _small_blob(self, desc: Descriptor, cap: int) -> bytes:
        if desc.size > cap:
            raise InvalidImage(f"{self.what}: config of {desc.size} bytes is too large",
                               hint=_MALFORMED)
        with contextlib.suppress(OSError):  # verified when it entered the store
            return self.store.blob(desc.digest).read_bytes()
        with self.reg.blob(self.ref.path, desc.digest) as resp:
            data = bytearray()
            for chunk in self.reg.iter_blob(resp, f"{self.what}: config"):
                data += chunk
                if len(data) > desc.size:
                    break
        _verify(bytes(data), desc, f"{self.what}: config")
        return bytes(data)

    def _check_config(self, data: bytes, manifest: Manifest) -> list[str]:
        # The same checks as a load's (images/validate.py); a non-linux image is refused there.
        config = parse_config(data, f"{self.what}: image config", len(manifest.layers))
        diff_ids: list[str] = config["rootfs"]["diff_ids"]
        variant = config.get("variant")
        got = Platform(str(config.get("os", ""))[:40], str(config.get("architecture", ""))[:40],
                       variant[:40] if isinstance(variant, str) else None)
        if not self.want.matches(got):
            if self.explicit:
                raise InvalidImage(f"{self.what} is for {got}, not the requested {self.want}",
                                   hint="pick another tag or --platform")
            log.warning("%s: image platform %s does not match the host's %s",
                        self.what, got, self.want)
        return diff_ids

    # ---- layers --------------------------------------------------------------------------

    def _layers(self, manifest: Manifest, diff_ids: list[str]) -> tuple[dict[str, int], int]:
        unique: dict[str, tuple[Descriptor, str]] = {}
        for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
            if desc.digest in unique and unique[desc.digest][1] != diff_id:
                raise InvalidImage(f"{self.what}: layer {desc.digest[:19]} has two diff_ids",
                                   hint=_MALFORMED)
            unique.setdefault(desc.digest, (desc, diff_id))
        for desc, _ in unique.values():
            self.progress.layer(desc.digest, "Waiting", desc.size)
        sizes: dict[str, int] = {}
        downloaded = 0
        pool = ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="pull")
        try:
            futures = {pool.submit(self._layer, desc, diff_id): desc.digest
                       for desc, diff_id in unique.values()}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            for future, digest in futures.items():
                size, fetched = future.result()
                sizes[digest] = size
                downloaded += fetched
        finally:
            self.cancel.set()  # running downloads stop at their next chunk
            pool.shutdown(wait=True, cancel_futures=True)
        return sizes, downloaded

    def _layer(self, desc: Descriptor, diff_id: str) -> tuple[int, int]:
        """(uncompressed size, 1 if downloaded here else 0) of one layer, now in the store."""
        dest = self.store.blob(desc.digest)
        with blob_lock(self.store, desc.digest, self.cancel):
            if self.cancel.is_set():
                raise Cancelled()
            if dest.exists():
                found, size = layer_diff_id(dest, self.what)
                if found != diff_id:
                    raise InvalidImage(f"{self.what}: layer {desc.digest[:19]} in the store "
                                       f"has diff_id {found}, the config says {diff_id}",
                                       hint="the image is malformed, or the store damaged")
                self.progress.layer(desc.digest, "Already exists")
                return size, 0
            downloads.remove_partials(self.store, desc.digest)
            for attempt in range(1, BLOB_ATTEMPTS + 1):
                try:
                    size = self._download(desc, diff_id, dest)
                    break
                except RegistryError as exc:
                    if attempt == BLOB_ATTEMPTS or exc.status_code is not None:
                        raise
                    log.debug("layer %s: %s; retrying", desc.digest[:19], exc.message)
                    self.progress.reset(desc.digest)
                    time.sleep(0.5 * 2 ** attempt)
            self.progress.layer(desc.digest, "Pull complete")
            return size, 1

    def _download(self, desc: Descriptor, diff_id: str, dest: Path) -> int:
        fd, tmp = tempfile.mkstemp(prefix=downloads.partial_prefix(desc.digest),
                                   dir=self.store.tmp)
        label = f"{self.what}: layer {desc.digest[:19]}"
        uncompressed = LayerDigest(label, desc.digest, self.budget)
        try:
            sha = Hasher()
            received = 0
            with os.fdopen(fd, "wb") as out, self.reg.blob(self.ref.path, desc.digest) as resp:
                length = answers.content_length(resp)
                if length is not None and length > desc.size:
                    raise InvalidImage(f"{label} is larger than the manifest says: the "
                                       f"registry offers {length} bytes, not {desc.size}",
                                       hint=_BAD_DATA)
                self.progress.layer(desc.digest, "Downloading", desc.size)
                for chunk in self.reg.iter_blob(resp, label):
                    if self.cancel.is_set():
                        raise Cancelled()
                    received += len(chunk)
                    if received > desc.size:
                        raise InvalidImage(f"{label} is larger than the {desc.size} bytes "
                                           "the manifest says", hint=_BAD_DATA)
                    sha.update(chunk)
                    uncompressed.update(chunk)
                    out.write(chunk)
                    self.progress.advance(desc.digest, len(chunk))
            if received != desc.size:
                raise InvalidImage(f"{label} is truncated: {received} of {desc.size} bytes",
                                   hint=_BAD_DATA)
            self.progress.layer(desc.digest, "Verifying Checksum")
            found = sha.digest()
            if found != desc.digest:
                raise InvalidImage(f"{label} fails verification: got {found}", hint=_BAD_DATA)
            found_diff_id, size = uncompressed.finish()
            if found_diff_id != diff_id:
                raise InvalidImage(f"{label}: uncompressed digest {found_diff_id} does not "
                                   f"match the config's diff_id {diff_id}",
                                   hint="the image is corrupt; nothing was stored")
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            return size
        except BaseException:
            self.budget.refund(uncompressed.inflated)  # a retry charges it all again
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


# ---- helpers -------------------------------------------------------------------------------


def _verify(data: bytes, desc: Descriptor, what: str) -> None:
    found = sha256(data)
    if found != desc.digest or len(data) != desc.size:
        raise InvalidImage(f"{what} fails verification: expected {desc.digest} "
                           f"({desc.size} bytes), got {found} ({len(data)} bytes)",
                           hint="the registry served corrupt or tampered data")


def _current(images: ImageStore, text: str) -> str | None:
    try:
        return images.get(text).id
    except HyperrunError:
        return None
