"""The fleet dashboard: one page a supervisor reads at a glance (``/dashboard``, admins only).

Per device: last seen, the last selftest, battery, upload backlog, completeness with the
missing ranges, recent gaps by cause, clock-fit quality per band, and (when the collector runs
with ``--thumbnails``) a thumbnail of the newest segment's first keyframe.

No build step: the page is static HTML with a small script. The admin token goes in the URL
fragment (``/dashboard#token=...``), which browsers never send to the server or write to its
logs; the script keeps it in the tab's session storage and sends it as a Bearer header to
``/dashboard/data`` and ``/dashboard/thumbnail/{device}``.

Thumbnails show workers' homes: off by default, admins only, made on request (PyAV decodes
the keyframe, encodes a small JPEG) and never stored.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import msgpack
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from agent.collector import completeness, tus
from agent.contract import segment_id
from agent.record.schemas import VIDEO_TOPIC
from agent.sources import GAP_TOPIC

if TYPE_CHECKING:
    from agent.collector.app import CollectorApp
    from agent.collector.service import Collector

THUMB_WIDTH = 320
HEAD_BYTES = 8 << 20
"""How much of a segment is read to find its first keyframe (it is at the start)."""
GAP_SEGMENTS = 3
"""Recent gaps: those in the newest few verified segments."""


class _IterIO(io.RawIOBase):
    """A readable file over the backend's byte blocks (for mcap's stream reader)."""

    def __init__(self, blocks: Iterator[bytes], limit: int | None = None) -> None:
        self.blocks, self.buf, self.left = blocks, b"", limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf:
            if self.left is not None and self.left <= 0:
                return 0
            block = next(self.blocks, b"")
            if not block:
                return 0
            if self.left is not None:
                block = block[: self.left]
                self.left -= len(block)
            self.buf = block
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def _messages(blocks: Iterator[bytes], topics: set[str],
              limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """(topic, data) of the segment's messages on ``topics``, in file order; a truncated or
    damaged tail ends the iteration."""
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    channels: dict[int, str] = {}
    reader = StreamReader(io.BufferedReader(_IterIO(blocks, limit)), skip_magic=False)
    try:
        for rec in reader.records:
            if isinstance(rec, Channel):
                channels[rec.id] = rec.topic
            elif isinstance(rec, Message) and channels.get(rec.channel_id) in topics:
                yield channels[rec.channel_id], rec.data
    except Exception:  # a cut-off head or a damaged chunk: what was read stands
        return


def _field(buf: bytes, number: int) -> bytes | None:
    """The first length-delimited field ``number`` of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        kind, num = key & 7, key >> 3
        if kind == 2:
            n, i = _varint(buf, i)
            if num == number:
                return buf[i:i + n]
            i += n
        elif kind == 0:
            _, i = _varint(buf, i)
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
        else:
            return None
    return None


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def thumbnail(blocks: Iterator[bytes]) -> bytes | None:
    """A JPEG of the first frame that decodes in the segment (its first keyframe)."""
    import av

    dec = av.CodecContext.create("h264", "r")
    for _, data in _messages(blocks, {VIDEO_TOPIC}, HEAD_BYTES):
        payload = _field(data, 3)  # foxglove.CompressedVideo.data
        if not payload:
            continue
        try:
            frames = dec.decode(av.Packet(payload))
        except av.error.FFmpegError:
            continue
        if not frames:
            continue
        f = frames[0]
        h = max(2, round(f.height * THUMB_WIDTH / f.width / 2) * 2)
        enc = av.CodecContext.create("mjpeg", "w")
        enc.width, enc.height, enc.pix_fmt = THUMB_WIDTH, h, "yuvj420p"
        enc.time_base = Fraction(1, 30)
        small = f.reformat(width=THUMB_WIDTH, height=h, format="yuvj420p")
        small.pts = 0
        out = b"".join(bytes(p) for p in [*enc.encode(small), *enc.encode(None)])
        return out or None
    return None


def recent_gaps(c: Collector, device: str, verified: list[int]) -> dict[str, Any]:
    """Gaps by cause (and by stream) in the newest verified segments, read from storage."""
    causes: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    seqs = sorted(verified)[-GAP_SEGMENTS:]
    for seq in seqs:
        up = c.store.find_segment(device, segment_id(device, seq))
        if up is None or up.state != "verified":
            continue
        for _, data in _messages(c.read(up), {GAP_TOPIC}):
            try:
                g = msgpack.unpackb(data)
            except ValueError:
                continue
            cause = str(g.get("cause", "?")).split(":")[0]
            causes[cause] += 1
            if isinstance(g.get("lost"), int) and g["lost"] > 0:
                lost[cause] += g["lost"]
    return {"segments": [segment_id(device, s) for s in seqs],
            "by_cause": dict(causes.most_common()), "lost_by_cause": dict(lost)}


def device_view(c: Collector, device: str) -> dict[str, Any]:
    report = completeness.device_report(c.store, device) or {"device_id": device}
    rows = c.store.segment_rows(device)
    verified = [seq for seq, state, _ in rows if state == "verified"]
    status = next(iter(c.store.documents("status", device)), None)
    tests = c.store.documents("selftest", device)
    last_test = tests[-1].body if tests else None
    body = status.body if status else {}
    sync = body.get("sync") or {}
    capture = body.get("capture") or {}
    streams = capture.get("streams") or []
    return {
        "device_id": device,
        "last_seen": body.get("received"),
        "completeness": {k: report.get(k) for k in ("received", "verified", "highest_seq",
                                                    "missing_count", "missing", "complete")},
        "missing_text": completeness.format_ranges(report.get("missing") or []),
        "backlog_segments": sync.get("backlog_segments"),
        "backlog_bytes": sync.get("backlog_bytes"),
        "sync_reason": sync.get("reason"),
        "sync_error": sync.get("last_error"),
        "battery": body.get("battery"),
        "recording": capture.get("state"),
        "clock": [{"stream": s.get("name"), "bound_us": s.get("clock_bound_us"),
                   "converged": s.get("clock_converged"), "streaming": s.get("streaming")}
                  for s in streams],
        "selftest": None if last_test is None else {
            "ok": last_test.get("ok"), "started": last_test.get("started"),
            "failed": [f"{ch.get('name')}: {ch.get('detail')}" for ch in
                       last_test.get("checks") or [] if ch.get("result") == "fail"]},
        "gaps": recent_gaps(c, device, verified),
        "has_video": bool(verified),
    }


class Dashboard:
    def __init__(self, api: CollectorApp, thumbnails: bool) -> None:
        self.api = api
        self.thumbnails = thumbnails

    def routes(self) -> list[Route]:
        return [Route("/dashboard", self.page, methods=["GET"]),
                Route("/dashboard/data", self.data, methods=["GET"]),
                Route("/dashboard/thumbnail/{device_id}", self.thumb, methods=["GET"])]

    async def _admin(self, request: Request) -> None:
        who = await self.api._who(request)
        if not who.is_admin:
            raise tus.TusError(403, "the dashboard is for admins")

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store",
                                           "Content-Security-Policy": CSP})

    async def data(self, request: Request) -> Response:
        from agent.collector.app import run

        await self._admin(request)
        c = self.api.c

        def build() -> dict[str, Any]:
            return {"now": time.time(), "thumbnails": self.thumbnails,
                    "devices": [device_view(c, d.id) for d in c.store.devices()]}

        return JSONResponse(await run(build), headers={"Cache-Control": "no-store"})

    async def thumb(self, request: Request) -> Response:
        from agent.collector.app import run

        await self._admin(request)
        if not self.thumbnails:
            raise tus.TusError(404, "thumbnails are off (start the collector with "
                                    "--thumbnails to show them to admins)")
        device = str(request.path_params["device_id"])
        c = self.api.c

        def make() -> bytes | None:
            seqs = [seq for seq, state, _ in c.store.segment_rows(device)
                    if state == "verified"]
            if not seqs:
                return None
            up = c.store.find_segment(device, segment_id(device, max(seqs)))
            return thumbnail(c.read(up)) if up is not None else None

        jpeg = await run(make)
        if jpeg is None:
            raise tus.TusError(404, "no verified segment with a decodable keyframe")
        return Response(jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "no-store, private"})


CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src blob:; connect-src 'self'")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wearcap fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .5em}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.4em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
.ok{color:#11772b;font-weight:600}.bad{color:#b3261e;font-weight:600}.dim{color:#777}
img.thumb{width:160px;border-radius:4px;display:block}
#msg{margin:.5em 0;color:#b3261e}
</style></head><body>
<h1>wearcap fleet <span class="dim" id="when"></span></h1>
<div id="msg"></div>
<table id="fleet"><thead><tr><th>device</th><th>last seen</th><th>selftest</th>
<th>battery</th><th>backlog</th><th>completeness</th><th>recent gaps</th><th>clock fit</th>
<th>camera</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get("token")) { sessionStorage.setItem("wearcap-admin", frag.get("token"));
  history.replaceState(null, "", location.pathname); }
const token = sessionStorage.getItem("wearcap-admin");
const auth = {headers: {"Authorization": "Bearer " + token}};
const ENT = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"};
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ENT[c]);
const ago = (now, t) => t ? Math.round(now - t) + " s ago" : "never";
function cell(row, html, cls) { const td = row.insertCell(); td.innerHTML = html;
  if (cls) td.className = cls; return td; }
async function load() {
  if (!token) { document.getElementById("msg").textContent =
    "Open this page as /dashboard#token=ADMIN_TOKEN (wearcap collector admin-token)"; return; }
  const r = await fetch("/dashboard/data", auth);
  if (!r.ok) { document.getElementById("msg").textContent = "the collector answered " +
    r.status + ": " + await r.text(); return; }
  const d = await r.json();
  document.getElementById("when").textContent = new Date(d.now * 1000).toISOString();
  const body = document.querySelector("#fleet tbody"); body.innerHTML = "";
  for (const v of d.devices) {
    const row = body.insertRow(); row.dataset.device = v.device_id;
    cell(row, "<b>" + esc(v.device_id) + "</b><br><span class=dim>" +
      esc(v.recording || "no status yet") + "</span>");
    cell(row, ago(d.now, v.last_seen));
    const t = v.selftest;
    cell(row, t ? (t.ok ? "<span class=ok>pass</span>" : "<span class=bad>fail</span><br>" +
      t.failed.map(esc).join("<br>")) + "<br><span class=dim>" + ago(d.now, t.started) +
      "</span>" : "<span class=dim>none</span>");
    const b = v.battery;
    cell(row, b && b.percent != null ? esc(b.percent) + " %" + (b.charging ? " (charging)" : "")
      : "<span class=dim>?</span>");
    cell(row, v.backlog_segments == null ? "<span class=dim>?</span>" :
      esc(v.backlog_segments) + " segments<br><span class=dim>" + esc(v.sync_reason) +
      (v.sync_error ? "; " + esc(v.sync_error) : "") + "</span>");
    const c = v.completeness;
    cell(row, esc(c.verified) + " verified, up to seq " + esc(c.highest_seq) + "<br>" +
      (c.missing_count ? "<span class=bad>missing " + esc(v.missing_text) + "</span>" :
       "<span class=ok>none missing</span>"));
    const g = v.gaps.by_cause; const keys = Object.keys(g);
    cell(row, keys.length ? keys.map(k => esc(k) + ": " + esc(g[k])).join("<br>") :
      "<span class=ok>none</span>");
    cell(row, v.clock.length ? v.clock.map(s => esc(s.stream) + ": " + (s.bound_us == null ?
      "?" : esc(Math.round(s.bound_us)) + " us") + (s.converged ? "" : " (converging)"))
      .join("<br>") : "<span class=dim>-</span>");
    const cam = cell(row, d.thumbnails ? (v.has_video ? "loading" : "no video") :
      "<span class=dim>thumbnails off</span>");
    if (d.thumbnails && v.has_video) thumb(cam, v.device_id);
  }
  document.body.dataset.loaded = "yes";
}
async function thumb(td, device) {
  const r = await fetch("/dashboard/thumbnail/" + encodeURIComponent(device), auth);
  if (!r.ok) { td.textContent = "no thumbnail (" + r.status + ")"; return; }
  const img = new Image(); img.className = "thumb"; img.alt = "newest keyframe of " + device;
  img.onload = () => { img.dataset.naturalWidth = img.naturalWidth; };
  img.src = URL.createObjectURL(await r.blob()); td.replaceChildren(img);
}
load();
</script></body></html>
"""
