"""Peak host memory while a fake guest floods the control channel with unexpected replies.

    python3 tests/guest_flood.py [MIB]      (default 32)

Prints JSON: the flood's size, the peak RSS before and after, and how the host's
setup_container ended. To compare with another checkout, put it first on PYTHONPATH.
The flood is `STARTED id=2` frames (13 bytes each) while the host waits for OK: the
smallest frames a host could be tempted to keep.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fake_guest import FakeGuest, started  # noqa: E402

from hyperrun.vm.protocol import Msg  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    chunk = started(2) * 5000  # about 64 KiB, sent again and again
    rounds = (mib << 20) // len(chunk)

    def flood(g: FakeGuest) -> None:
        kind, _ = g.read_frame()
        assert kind == Msg.CONTAINER
        for _ in range(rounds):
            g.ctl.sendall(chunk)
        g.ctl.close()  # an unbounded host ends here, with GuestGone

    guest = FakeGuest()
    before = peak_mib()
    guest.play(flood)
    try:
        guest.session.setup_container("flood", 600, lambda: True)
        outcome = "accepted"
    except Exception as exc:  # noqa: BLE001 - the outcome is what we report
        outcome = f"{type(exc).__name__}: {exc}"
    after = peak_mib()
    guest.close()
    print(json.dumps({"flood_mib": mib, "peak_before_mib": round(before, 1),
                      "peak_after_mib": round(after, 1), "growth_mib": round(after - before, 1),
                      "outcome": outcome}))


if __name__ == "__main__":
    main()
