"""The wearer's discards, as far as the sync service is concerned.

``agent.record.discard.carry_out`` turns each pending request into tombstones on the device
(state ``done-local``). This module then

- moves every tombstoned segment to ``discarded`` in the sync state (never uploaded again;
  from any state, since the collector may hold it in any state);
- sends the collector the request (``agent.contract.DISCARD_PATH``, the device's own token)
  with each segment's id, SHA-256 and size, so the collector deletes its copy, purges what
  was derived from it and keeps a tombstone, and completeness shows a discard, not a loss;
- on the collector's 200, rewrites the request with ``state = "done"`` and the answer.

A crash anywhere leaves the request ``done-local`` (or ``pending``), and it is sent again at
the next scan or start; the collector's side is idempotent. A server without the route (a
third-party tus server: 404/405) is reported once and the request left ``done-local``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx

from agent.contract import discard_body, discard_path
from agent.durable import write_atomic
from agent.fleetstatus import base_url
from agent.record.discard import DISCARD_DIR, tombstones
from agent.sync.state import TRANSITIONS, State

log = logging.getLogger(__name__)


def unreported(spool_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Requests carried out on the device that the collector has not confirmed."""
    d = spool_root / DISCARD_DIR
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            req = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(req, dict) and req.get("state") == "done-local":
            out.append((p, req))
    return out


def mark_discarded(state: State, ids: list[str],
                   tombs: dict[str, dict[str, Any]] | None = None) -> int:
    """``discarded`` in the sync state, also for a segment the state never saw (discarded
    before the first scan found it), so every tombstone is counted."""
    n = 0
    for sid in ids:
        seg = state.get(sid)
        t = (tombs or {}).get(sid)
        if seg is None and t is not None and isinstance(t.get("sequence"), int):
            state.add(sid, t["sequence"], "", int(t.get("size") or 0))
            state.update(sid, sha256=t.get("sha256"))
            seg = state.get(sid)
        if seg is not None and "discarded" in TRANSITIONS[seg.state]:
            state.transition(sid, "discarded",
                             last_error="discarded by the wearer (tombstone kept)")
            n += 1
    return n


class Reporter:
    def __init__(self, client: httpx.Client, files_url: str, token: str,
                 device_id: str) -> None:
        self.client = client
        self.url = base_url(files_url) + discard_path(device_id)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.unsupported = False
        self.confirmed: list[str] = []
        """Segment ids the collector confirmed purged in this run."""

    @staticmethod
    def mark(spool_root: Path, state: State) -> int:
        """Move every segment of an unreported request to ``discarded``; returns how many
        requests wait for the collector."""
        todo = unreported(spool_root)
        tombs = tombstones(spool_root) if todo else {}
        for _, req in todo:
            mark_discarded(state, [str(i) for i in req.get("tombstoned", [])], tombs)
        return len(todo)

    def send(self, spool_root: Path, state: State) -> int:
        """Send every unreported request; returns how many are still unconfirmed."""
        todo = unreported(spool_root)
        if not todo:
            return 0
        tombs = tombstones(spool_root)
        left = 0
        for path, req in todo:
            ids = [str(i) for i in req.get("tombstoned", [])]
            mark_discarded(state, ids, tombs)
            if not ids:
                self._done(path, req, {"discarded": []})
                continue
            if self.unsupported:
                continue
            segs = []
            for sid in ids:
                t = tombs.get(sid, {})
                seg = state.get(sid)
                sha = t.get("sha256") or (seg.sha256 if seg else None)
                size = t.get("size") if "size" in t else (seg.size if seg else None)
                segs.append((sid, sha, size))
            try:
                r = self.client.post(self.url, json=discard_body(path.stem, segs),
                                     headers=self.auth)
            except httpx.HTTPError as exc:
                log.info("discard request %s not sent yet: %s", path.name, exc)
                left += 1
                continue
            if r.status_code in (404, 405):
                self.unsupported = True
                log.warning("the collector has no discard route (HTTP %d): segments it "
                            "already holds of request %s stay there", r.status_code, path.name)
                continue
            if r.status_code != 200:
                log.warning("discard request %s refused: HTTP %d %s", path.name,
                            r.status_code, r.text[:200])
                left += 1
                continue
            try:
                answer = r.json()
            except ValueError:
                answer = {}
            self._done(path, req, answer if isinstance(answer, dict) else {})
            self.confirmed.extend(ids)
            log.warning("the collector purged %d segment(s) of discard request %s",
                        len(ids), path.name)
        return left

    @staticmethod
    def _done(path: Path, req: dict[str, Any], answer: dict[str, Any]) -> None:
        req.update(state="done", collector=answer.get("discarded", []))
        write_atomic(path, json.dumps(req, indent=1).encode())
