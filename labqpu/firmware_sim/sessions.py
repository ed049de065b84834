"""The sessions a simulated controller's ``hello`` opened, and the idempotency keys of their
runs (docs/protocol.md, sections 3 and 7).

A session unused for ``SESSION_IDLE_S`` is forgotten when the next one opens, and beyond
``MAX_SESSIONS`` the least recently used one holding no run. A key is
remembered for ``KEY_RETENTION_S`` after it was bound, the oldest forgotten early beyond
``MAX_KEYS``. Not thread-safe: the controller's lock guards it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Container

from labqpu.firmware_sim.runs import KeyRecord
from labqpu.firmware_sim.server_limits import (
    KEY_RETENTION_S,
    MAX_KEYS,
    MAX_SESSIONS,
    SESSION_IDLE_S,
)

__all__ = ["Sessions"]


class Sessions:
    """The sessions held (``session in sessions``, ``len(sessions)``), who each came from, and
    what each session's idempotency keys ran."""

    def __init__(self) -> None:
        #: Session -> when last used (monotonic s), least recently used first.
        self._used: OrderedDict[str, float] = OrderedDict()
        #: Session -> who its ``hello`` came from (the authenticator's identity).
        self.identities: dict[str, str] = {}
        self._keys: OrderedDict[tuple[str, str], KeyRecord] = OrderedDict()

    def __contains__(self, session: object) -> bool:
        return session in self._used

    def __len__(self) -> int:
        return len(self._used)

    def open(self, session: str, identity: str, busy: Callable[[], Container[str]]) -> None:
        """Hold ``session`` (new, or held again) as the most recently used, from ``identity``.
        First the sessions idle for ``SESSION_IDLE_S`` are forgotten, then, to stay within
        ``MAX_SESSIONS``, the least recently used ones not in ``busy()`` (those with a run the
        controller holds, queued, running or finished: a client between its ``run`` and its
        ``fetch`` keeps its session, whatever a neighbour's hellos, and so does one whose
        ``run`` or ``fetch`` reply was lost, whose retry must find the run in its session)."""
        now = time.monotonic()
        self._used.pop(session, None)
        while self._used and next(iter(self._used.values())) < now - SESSION_IDLE_S:
            self._forget(next(iter(self._used)))
        excess = len(self._used) - MAX_SESSIONS + 1
        if excess > 0:
            active = busy()
            for stale in [s for s in self._used if s not in active][:excess]:
                self._forget(stale)
        self._used[session] = now
        self.identities[session] = identity

    def _forget(self, session: str) -> None:
        del self._used[session]
        self.identities.pop(session, None)

    def use(self, session: str | None) -> bool:
        """Mark ``session`` used now; False when it is not held (never opened, or forgotten)."""
        if session is None or session not in self._used:
            return False
        self._used[session] = time.monotonic()
        self._used.move_to_end(session)
        return True

    def key(self, session: str, key: str) -> KeyRecord | None:
        """What ``key`` ran in ``session``, once the keys past their retention are forgotten."""
        oldest = time.monotonic() - KEY_RETENTION_S
        while self._keys and next(iter(self._keys.values())).seen_at < oldest:
            self._keys.popitem(last=False)
        return self._keys.get((session, key))

    def bind(self, session: str, key: str, record: KeyRecord) -> None:
        """Bind ``key`` in ``session`` to ``record``, forgetting the oldest key beyond
        ``MAX_KEYS``."""
        self._keys[(session, key)] = record
        if len(self._keys) > MAX_KEYS:
            self._keys.popitem(last=False)

    def run_to_abort(self, session: str, key: str) -> str | None:
        """The run ``key`` ran in ``session``, for an abort by key; None when no run came under
        it, yet or ever: the key is then bound to no run, so that a run sent under it later is
        refused (``Aborted``) and never plays."""
        record = self.key(session, key)
        if record is None:
            self.bind(session, key, KeyRecord(None, None, time.monotonic()))
            return None
        return record.run_id
