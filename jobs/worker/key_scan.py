"""
Where a worker's claims under limits stand between one claim and the next:
where each queue's scan of keys stopped, how many keys a claim visits, and
whether the last one met keys without room (queries.limits.LIMITED_CLAIM).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import transitions
from .protocol import ClaimedJob

# Keys with room of a queue that one claim visits at least (see
# queries.limits.LIMITED_CLAIM), and that a claim, or the search for the next
# due job, visits at most.
KEYS_PER_CLAIM = 16
KEYS_PER_WAIT = 1000
# Keys without room that a claim, or the search for the next due job, passes
# over at most (two index probes each, see queries.limits._KEY_SCAN) while
# this worker's claims meet such keys: when every key is full, the scan ends
# there.
KEYS_SKIPPED = 2000
# Where LIMITED_CLAIM's last row says where its scans stopped.
STATE_COLUMN = ClaimedJob._fields.index("trace_context")


@dataclass
class KeyScan:
    """
    One worker's scan of keys across its claims: a hint of where to look
    next, never what keeps a limit (LIMITED_CLAIM counts each key's room on
    the row it locks).
    """

    # Where each queue's scan of keys stopped, and whether a scan stopped
    # before the last key.
    cursor: dict[str, str] = field(default_factory=dict)
    keys_left: bool = False
    # How many keys with room a claim visits: fewer while the keys it
    # visits fill its batch (see learn()).
    keys_to_visit: int = KEYS_PER_WAIT
    # Whether the last LIMITED_CLAIM met keys without room: until one meets
    # none, the scans pass over such keys (KEYS_SKIPPED) instead of spending
    # their visits on them.
    full_keys_met: bool = True

    @property
    def skip(self) -> int:
        return KEYS_SKIPPED if self.full_keys_met else 0

    def claim_params(self, limit: int) -> dict[str, Any]:
        """LIMITED_CLAIM's parameters of the scan, for a batch of `limit`."""
        return {
            "after": json.dumps(self.cursor),
            "visit": min(max(limit, KEYS_PER_CLAIM), self.keys_to_visit),
            "skip": self.skip,
        }

    def claim(
        self, cursor: Any, params: dict[str, Any], *, every_queue: bool, own: bool
    ) -> tuple[list[tuple], dict[str, Any]]:
        """
        LIMITED_CLAIM from where the scan stands: the rows of the jobs it
        started, and what its last row says (learned here). `own`: the
        claim is of all of the worker's queues.
        """
        limit = params["limit"]
        *rows, last = transitions.claim(
            cursor, {**params, **self.claim_params(limit)}, limited=True, every_queue=every_queue
        )
        state = json.loads(last[STATE_COLUMN])
        self.learn(state, len(rows), limit, None if own else params["queues"])
        return rows, state

    def began_past_first_key(self, queues: Sequence[str]) -> bool:
        """Whether the next scan of these queues (none: every queue) begins past a first key."""
        return any(self.cursor.get(queue) for queue in queues or self.cursor)

    def learn(
        self, state: dict[str, Any], claimed: int, limit: int, queues: Sequence[str] | None
    ) -> None:
        """
        What a claim's last row says (`state`), and how many of its batch of
        `limit` it claimed; `queues` when it claimed only some of the
        worker's queues.
        """
        after = {queue: key for queue, key in state["after"].items() if key}
        self.keys_left = bool(after)
        if queues is not None:
            # A claim of some of the worker's queues leaves the others' scans where they are.
            after = {**{q: k for q, k in self.cursor.items() if q not in queues}, **after}
        self.cursor = after
        # Keys that filled the batch have jobs enough for a larger share
        # each: the next claim visits fewer, and so locks and counts fewer
        # key rows for as many jobs. Keys that left it short while more
        # were left unvisited: the next claim visits more.
        if claimed == limit:
            self.keys_to_visit = max(KEYS_PER_CLAIM, self.keys_to_visit // 2)
        elif self.keys_left:
            self.keys_to_visit = min(KEYS_PER_WAIT, self.keys_to_visit * 2)
        self.full_keys_met = state["full"] > 0
