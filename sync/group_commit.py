"""The parent's group commit across children: one transaction for every child whose batches wait.

Each child's session used to write its own groups. With many children sending at once, the
province made one fsynced transaction per child group — a thousand children, a thousand
commits of a few hundred records each, one after another on the one writer. Sessions now hand
their verified groups here, and whatever gathered while the previous transaction ran is written
in the next one (`Downstream.apply_groups`): one commit for all of them, each child's checkpoint
in it. A child streaming alone goes through as before, one group after another. A session sends
its acks only once the transaction holding its batches has committed; a group that fails (its
child out of step) fails alone, and a failure of the store fails every group it held.
"""

from __future__ import annotations

import asyncio

from .batch import Refusal
from .downstream import ChildGroup, Downstream

Outcome = list[list[Refusal]]


class GroupCommit:
    """Gathers the children's verified groups and writes them, one transaction at a time."""

    def __init__(self, down: Downstream) -> None:
        self._down = down
        self._waiting: list[tuple[ChildGroup, asyncio.Future[Outcome]]] = []
        self._busy = False  # a transaction is being written (by a session alone, or by the writer task)
        self._writer: asyncio.Task[None] | None = None

    async def apply(self, group: ChildGroup) -> Outcome:
        """Write `group` with whatever else waits; its batches' refusals once committed."""
        if not self._busy:
            # Nothing is being written: this session writes its group at once, itself (a child
            # streaming alone goes as it always did); groups arriving meanwhile wait for the next.
            self._busy = True
            try:
                return await asyncio.to_thread(self._down.apply_batches, group.child, group.epoch, group.batches, group.prepared)
            finally:
                self._busy = False
                self._start()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((group, future))
        self._start()
        return await future

    def _start(self) -> None:
        if not self._busy and self._waiting:
            self._busy = True
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._waiting:
                # A group whose session ended while it waited is left out: its child sends it again.
                taken, self._waiting = [(g, f) for g, f in self._waiting if not f.done()], []
                if not taken:
                    break
                try:
                    outcomes = await asyncio.to_thread(self._down.apply_groups, [group for group, _ in taken])
                except asyncio.CancelledError:
                    for _, future in taken:
                        future.cancel()
                    raise
                except Exception as exc:  # the store itself (a full disk): every group it held fails
                    outcomes = [exc] * len(taken)
                for (_, future), outcome in zip(taken, outcomes, strict=True):
                    if future.done():  # its session ended meanwhile: the child sends the batches again
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._busy = False
