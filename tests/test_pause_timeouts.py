"""A paused VM does not use up the host's time limits for the guest's answers (no VM)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fake_guest import FakeGuest, GuestEnd, ctl

from hyperrun.vm.protocol import Msg


@pytest.fixture
def guest() -> Iterator[FakeGuest]:
    g = FakeGuest()
    yield g
    g.close()


def _answers_late(delay: float):
    def script(g: GuestEnd) -> None:
        kind, _ = g.read_frame()
        assert kind == Msg.CONTAINER
        time.sleep(delay)
        g.ctl.sendall(ctl(Msg.OK))
    return script


def test_time_paused_does_not_count_against_the_boot_handshake(guest: FakeGuest) -> None:
    resumed = time.monotonic() + 1.5  # paused for the first 1.5 s of a 0.5 s limit
    guest.session.paused = lambda: time.monotonic() < resumed
    guest.play(_answers_late(1.7))
    guest.session.setup_container("h", 0.5, lambda: True)  # answered: no TimeoutError


def test_a_guest_that_is_not_paused_still_times_out(guest: FakeGuest) -> None:
    guest.play(_answers_late(1.7))
    with pytest.raises(TimeoutError):
        guest.session.setup_container("h", 0.5, lambda: True)
