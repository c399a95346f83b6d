"""The collector's data routes for data engineers: list, download (and export, ``export.py``).

    GET /data/devices                            completeness of every device
    GET /data/devices/{id}                       completeness of one device, its segments
                                                 and its tombstones (discarded, expired)
    GET /data/devices/{id}/segments/{segment}    the verified bytes of one segment
    GET /data/devices/{id}/takes                 its takes; .../takes/{take}.mcap|.mp4 one
                                                 take exported (agent/collector/exports.py)

Every route needs an ``admin`` or ``reader`` token (``wearcap collector token --role
reader``); a device token is refused with 403, whatever device it belongs to (a rig has no
business reading recordings, not even its own), and a missing or unknown token is a 401.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.collector import completeness, tus
from agent.collector.auth import Principal
from agent.collector.store import Upload
from agent.contract import parse_segment_id

if TYPE_CHECKING:
    from agent.collector.app import CollectorApp

PREFIX = "/data"


def segment_entry(up: Upload) -> dict[str, Any]:
    return {"segment_id": up.segment_id, "seq": up.seq, "state": up.state,
            "sha256": up.sha256, "length": up.length, "verified_at": up.verified_at,
            "download": (f"{PREFIX}/devices/{up.device}/segments/{up.segment_id}"
                         if up.state == "verified" else None)}


class DataRoutes:
    def __init__(self, api: CollectorApp) -> None:
        self.api = api

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/devices", self.devices, methods=["GET"]),
            Route(f"{PREFIX}/devices/{{device_id}}", self.device, methods=["GET"]),
            Route(f"{PREFIX}/devices/{{device_id}}/segments/{{segment_id}}", self.segment,
                  methods=["GET"]),
            Route(f"{PREFIX}/devices/{{device_id}}/takes", self.takes, methods=["GET"]),
            Route(f"{PREFIX}/devices/{{device_id}}/takes/{{name}}", self.export,
                  methods=["GET"]),
        ]

    async def takes(self, request: Request) -> Response:
        from agent.collector import exports
        from agent.collector.app import run

        await self.reader(request)
        device = str(request.path_params["device_id"])
        if await run(self.api.c.store.device, device) is None:
            raise tus.TusError(404, f"no device {device!r}")
        return JSONResponse(await run(exports.list_takes, self.api.c, device))

    async def export(self, request: Request) -> Response:
        from agent.collector import exports
        from agent.collector.app import run

        await self.reader(request)
        device = str(request.path_params["device_id"])
        take, _, fmt = str(request.path_params["name"]).rpartition(".")
        if fmt not in exports.FORMATS or not take:
            raise tus.TusError(404, f"ask for TAKE.mcap (Foxglove) or TAKE.mp4, not "
                                    f"{request.path_params['name']!r}")
        e = await run(exports.get_export, self.api.c, device, take, fmt)
        body = await run(exports.read_export, self.api.c, e)
        return StreamingResponse(body, media_type=exports.MEDIA[fmt], headers={
            "Content-Length": str(e.length),
            "Content-Disposition": f'attachment; filename="{take}.{fmt}"'})

    async def reader(self, request: Request) -> Principal:
        """The asking admin or reader; 401 without a valid token, 403 for a device."""
        who = await self.api._who(request)
        if not who.can_read_data:
            raise tus.TusError(403, "data access needs an admin or reader token (wearcap "
                                    "collector token --role reader); device tokens are refused")
        return who

    async def devices(self, request: Request) -> Response:
        from agent.collector.app import run

        await self.reader(request)
        return JSONResponse(await run(completeness.fleet_report, self.api.c.store))

    async def device(self, request: Request) -> Response:
        from agent.collector.app import run

        await self.reader(request)
        device = str(request.path_params["device_id"])
        store = self.api.c.store

        def report() -> dict[str, Any] | None:
            rep = completeness.device_report(store, device)
            if rep is None:
                return None
            rep["segments"] = [segment_entry(u) for u in store.device_uploads(device)]
            rep["tombstones"] = [t.to_dict() for t in store.tombstones(device)]
            return rep

        rep = await run(report)
        if rep is None:
            raise tus.TusError(404, f"no device {device!r}")
        return JSONResponse(rep)

    async def segment(self, request: Request) -> Response:
        from agent.collector.app import run

        await self.reader(request)
        device = str(request.path_params["device_id"])
        sid = str(request.path_params["segment_id"])
        parsed = parse_segment_id(sid)
        if parsed is None or parsed[0] != device:
            raise tus.TusError(404, f"{sid!r} is not a segment id of device {device!r}")
        up = await run(self.api.c.store.find_segment, device, sid)
        if up is None or up.state != "verified":
            raise tus.TusError(404, f"segment {sid} is not held verified")
        body = await run(self.api.c.read, up)
        return StreamingResponse(body, media_type="application/octet-stream", headers={
            "Content-Length": str(up.length), tus.VERIFIED_HEADER: f"sha256={up.sha256}",
            "Content-Disposition": f'attachment; filename="{sid}.mcap"'})
