"""hyperrun: OCI images run inside lightweight virtual machines."""

__version__ = "0.1.0"
