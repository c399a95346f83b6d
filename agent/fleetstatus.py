"""What a rig tells the collector about itself, for the fleet dashboard.

The sync service calls :meth:`Reporter.cycle` every loop. At most every ``every`` seconds, and
only while the collector is reachable, it posts a small status document (the sync figures,
what the capture service's live status says of recording, bands and clock fits, the battery)
to ``POST /devices/{id}/status``, and uploads the selftest reports kept in
``<spool>/selftest/`` that were not sent yet (moved to ``selftest/sent/`` once the collector
took them). Authenticated with the device token; a failure is logged and retried next time,
never allowed to stop uploads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from agent import livestatus

log = logging.getLogger(__name__)

STATUS_EVERY = 30.0
STREAM_KEYS = ("name", "state", "streaming", "rate_hz", "gaps", "clock_converged",
               "clock_bound_us", "absent_cause")


def base_url(files_url: str) -> str:
    base = files_url.rstrip("/")
    return base[: -len("/files")] if base.endswith("/files") else base


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def status_document(device_id: str, spool: Path, sync: dict[str, Any]) -> dict[str, Any]:
    live = livestatus.find_capture()
    capture = None
    if live and live.get("fresh") and live.get("device_id") == device_id:
        cam = live.get("camera") or {}
        capture = {"state": live.get("state"),
                   "segment": (live.get("segment") or {}).get("id"),
                   "camera_fps": cam.get("fps"),
                   "streams": [{k: s.get(k) for k in STREAM_KEYS}
                               for s in live.get("streams") or []],
                   "disk_hours_left": (live.get("disk") or {}).get("hours_left")}
    return {"kind": "status", "device_id": device_id, "sent": time.time(), "sync": sync,
            "capture": capture, "battery": _read_json(spool / "battery.json")}


class _Unsupported(Exception):
    pass


class Reporter:
    def __init__(self, client: httpx.Client, files_url: str, token: str, device_id: str,
                 spool: Path, every: float = STATUS_EVERY) -> None:
        self.client = client
        self.base = base_url(files_url)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.device = device_id
        self.spool = spool
        self.every = every
        self._last = -1e18
        self.sent_status = 0
        self.sent_selftests = 0
        self.unsupported = False
        """The server has no fleet routes (a third-party tus server): stop asking."""

    def cycle(self, sync: Callable[[], dict[str, Any]], *, force: bool = False) -> None:
        now = time.monotonic()
        if self.unsupported or (not force and now - self._last < self.every):
            return
        self._last = now
        try:
            self._post("status", status_document(self.device, self.spool, sync()))
            self.sent_status += 1
            self._selftests()
        except _Unsupported:
            self.unsupported = True
        except (httpx.HTTPError, OSError) as exc:
            log.info("status for the fleet dashboard not sent: %s", exc)

    def _post(self, what: str, doc: dict[str, Any]) -> None:
        r = self.client.post(f"{self.base}/devices/{self.device}/{what}", json=doc,
                             headers=self.auth)
        if r.status_code in (404, 405):  # a plain tus server: nothing to report to
            raise _Unsupported(f"HTTP {r.status_code}")
        if r.status_code >= 300:
            raise httpx.HTTPError(f"{what}: HTTP {r.status_code} {r.text[:200]}")

    def _selftests(self) -> None:
        d = self.spool / "selftest"
        if not d.is_dir():
            return
        for path in sorted(d.glob("*.json")):
            doc = _read_json(path)
            if doc is None:
                continue
            self._post("selftest", doc)
            sent = d / "sent"
            sent.mkdir(exist_ok=True)
            path.replace(sent / path.name)
            self.sent_selftests += 1
