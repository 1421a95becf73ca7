"""The control plane decides liveness from heartbeats in a store, the same on CPU and GPU: a rank that stops
making progress is named and every rank is told to stop; a rank that waits on a peer, or has finished, is
never blamed. Ranks here are threads sharing one in-memory store; `exit_fn` records instead of exiting."""

from __future__ import annotations

import threading
import time

import torch.distributed as dist

from dualpar.transport.control import ABORT_KEY, ControlPlane

TIMEOUT_S = 0.6
INTERVAL_S = 0.05


class Exits:
    """Records each rank's exit code and lets the test wait for it."""

    def __init__(self):
        self.codes: dict[int, int] = {}
        self.event = threading.Event()

    def for_rank(self, rank: int):
        def exit_fn(code: int) -> None:
            self.codes[rank] = code
            self.event.set()

        return exit_fn

    def wait_for(self, ranks: set[int], limit_s: float = 10.0) -> None:
        deadline = time.monotonic() + limit_s
        while not ranks <= set(self.codes) and time.monotonic() < deadline:
            time.sleep(INTERVAL_S)


def _planes(world: int, exits: Exits) -> tuple[dist.Store, list[ControlPlane]]:
    store = dist.HashStore()
    planes = [
        ControlPlane(dist.PrefixStore("control/", store), r, world, TIMEOUT_S, INTERVAL_S, exits.for_rank(r))
        for r in range(world)
    ]
    for p in planes:
        p.start()
    return dist.PrefixStore("control/", store), planes


def test_a_silent_rank_is_named_and_every_rank_stops(capfd):
    exits = Exits()
    store, planes = _planes(3, exits)
    with planes[0].waiting(), planes[2].waiting():  # ranks 0 and 2 wait on rank 1, which hangs
        exits.wait_for({0, 1, 2})
    for p in planes:
        p.close(done=False)
    assert exits.codes == {0: 1, 1: 1, 2: 1}
    reason = store.get(ABORT_KEY).decode()
    assert "rank 1 stalled: no heartbeat for" in reason and f"parallel.timeout_s={TIMEOUT_S:g}" in reason
    err = capfd.readouterr().err
    assert "rank 1: stopping, rank " in err, "the stalled rank's watchdog ends it although its main thread hangs"


def test_waiting_and_finished_ranks_are_never_blamed():
    exits = Exits()
    store, planes = _planes(2, exits)
    with planes[0].waiting():
        planes[1].close(done=True)  # rank 1 finished first; rank 0 still waits (e.g. writing its outputs)
        time.sleep(4 * TIMEOUT_S)
    with planes[0].waiting():
        time.sleep(INTERVAL_S)
    planes[0].close(done=True)
    assert exits.codes == {}
    assert not store.check([ABORT_KEY])


def test_progress_keeps_a_rank_alive_and_abort_reaches_every_peer(capfd):
    exits = Exits()
    store, planes = _planes(2, exits)
    deadline = time.monotonic() + 3 * TIMEOUT_S
    while time.monotonic() < deadline:  # both ranks exchange messages: each step is progress
        for p in planes:
            p.progress()
        time.sleep(INTERVAL_S / 2)
    assert exits.codes == {}
    planes[0].abort("PeerError: receive from rank 1 failed")  # rank 0's main thread is raising this itself
    exits.wait_for({1})
    time.sleep(4 * INTERVAL_S)
    for p in planes:
        p.close(done=False)
    assert exits.codes == {1: 1}, "the rank that posted the abort leaves through its own exception, not os._exit"
    assert "rank 1: stopping, rank 0: PeerError: receive from rank 1 failed" in capfd.readouterr().err
