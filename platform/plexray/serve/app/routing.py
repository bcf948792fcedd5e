"""Send each new session to the least loaded replica that can take it.

Serve's default router compares two random replicas; with more than two, both may be full while
another has room, and the caller is told 'busy' needlessly. This router probes every replica's
ongoing requests (each live WebSocket holds one) and the base class picks the lowest that accepts.
Sessions are long and new ones rare next to their frames, so probing all replicas is cheap.
"""

from __future__ import annotations

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica


class LeastSessionsRouter(FIFOMixin, RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        return [list(candidate_replicas)] if candidate_replicas else []
