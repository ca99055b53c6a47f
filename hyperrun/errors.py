"""One exception hierarchy; the CLI turns each into a one-line message and an exit status."""

from __future__ import annotations

# Exit statuses follow docker's conventions (see docs/protocol.md).
EXIT_FAILURE = 1  # a query found nothing (`inspect` of a missing object), as docker's
EXIT_HYPERRUN = 125  # hyperrun failed before the container's process started
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_USAGE = 125  # bad command line (unknown flag, missing argument), as docker's


class HyperrunError(Exception):
    """A failure the user can act on: a message, an optional hint and an exit status."""

    status = EXIT_HYPERRUN
    details: str | None = None  # extra lines printed after the message (console output)

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(HyperrunError):
    """Invalid option values (memory sizes, env files, ...)."""


class ImageNotFound(HyperrunError):
    def __init__(self, reference: str) -> None:
        super().__init__(
            f"image not found: {reference}",
            hint="see `hyperrun images`; add one with `hyperrun load -i FILE` or `hyperrun import`",
        )
        self.reference = reference


class InvalidImage(HyperrunError):
    """An archive, manifest or config that is malformed or fails verification."""


class HostileLayer(InvalidImage):
    """A layer entry that tries to escape the root filesystem or is otherwise unsafe."""

    def __init__(self, layer: str, entry: str, reason: str) -> None:
        super().__init__(
            f"refusing layer {layer}: entry {entry!r} {reason}",
            hint="the image is malformed or malicious; nothing was written",
        )
        self.layer = layer
        self.entry = entry


class CommandFailed(HyperrunError):
    """An external tool (mkfs.ext4, qemu-img, ...) exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {returncode}"
        super().__init__(f"{argv[0]} failed: {last}",
                         hint="rerun with --debug for the full command")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class BootAssetsMissing(HyperrunError):
    def __init__(self, what: str, path: str) -> None:
        super().__init__(f"{what} not found at {path}", hint="run scripts/setup")


class HypervisorError(HyperrunError):
    """libvirt could not be reached or refused to run the domain."""


class BootFailed(HyperrunError):
    """The VM started but the guest agent never answered."""

    def __init__(self, message: str, console_tail: str) -> None:
        super().__init__(message, hint="the last lines of the guest console follow")
        self.details = console_tail.strip() or "(the guest console was empty)"


class ContainerNotFound(HyperrunError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no such container: {ref}", hint="see `hyperrun ps -a`")
        self.ref = ref


class NoSuchObject(HyperrunError):
    """`inspect` of a name that is no container (or image); exits 1, as docker's does."""

    status = EXIT_FAILURE

    def __init__(self, ref: str, kind: str | None = None) -> None:
        what = kind or "object"
        hint = {"container": "see `hyperrun ps -a`", "image": "see `hyperrun images`"}.get(
            what, "see `hyperrun ps -a` and `hyperrun images`")
        super().__init__(f"Error: No such {what}: {ref}", hint=hint)
        self.ref = ref


class GuestGone(HyperrunError):
    """The VM stopped (or its agent hung up) while we were talking to it."""


class ProtocolError(HyperrunError):
    """The guest sent something that does not follow docs/protocol.md (it is not trusted)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"the guest broke the protocol: {message}",
                         hint="the VM's agent misbehaved or was taken over; the VM was stopped")


class ContainerError(HyperrunError):
    """The guest agent reported a failure while preparing or starting the process."""

    def __init__(self, message: str, status: int = EXIT_HYPERRUN) -> None:
        super().__init__(message)
        self.status = status


class RegistryError(HyperrunError):
    """A registry refused or failed a request; status_code is the HTTP status, if any."""

    def __init__(self, message: str, hint: str | None = None,
                 status_code: int | None = None) -> None:
        super().__init__(message, hint)
        self.status_code = status_code


class RegistryUnreachable(RegistryError):
    """No connection to the registry (refused, no route, name unknown, timed out)."""


class Unauthorized(RegistryError):
    """The registry wants credentials we do not have, or refused the ones we gave."""


class ManifestNotFound(RegistryError):
    """The registry has no such repository, tag or digest."""
