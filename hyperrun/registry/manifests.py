"""What only the registry side needs of manifests: the Accept header of manifest requests.

The documents themselves (descriptors, manifests, indexes, platforms) and their checks are
shared with `load` in hyperrun/images/manifest.py.
"""

from __future__ import annotations

from hyperrun.images.manifest import Platform
from hyperrun.images.model import (
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
)

__all__ = ["ACCEPT", "Platform"]

# What we ask the registry for, best first (docker sends the same set).
ACCEPT = ", ".join([MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST,
                    MEDIA_DOCKER_MANIFEST])
