"""The collector's field-operations routes: enrollment by code, and what rigs report.

    POST /enroll                      {"code", "device_id"} -> 201 {"device_id", "token",
                                      "next_seq"}; 403 refused code, 409 device id taken
    POST /devices/{id}/status         the rig's status document (that device's token)
    POST /devices/{id}/selftest       a selftest report (that device's token)

No token is needed for /enroll: the one-time code is the credential (agent.collector.enrollment).
The fleet dashboard (agent.collector.dashboard) reads what the other two store.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.collector import enrollment, tus
from agent.errors import InputError

if TYPE_CHECKING:
    from agent.collector.app import CollectorApp

DOC_MAX = 64 * 1024
"""Largest status document or selftest report accepted."""
SELFTESTS_KEPT = 20


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > DOC_MAX:
        raise tus.TusError(413, f"document larger than {DOC_MAX} bytes")
    try:
        doc = json.loads(body or b"{}")
    except ValueError as exc:
        raise tus.TusError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise tus.TusError(400, "body must be a JSON object")
    return doc


class FleetRoutes:
    def __init__(self, api: CollectorApp) -> None:
        self.api = api

    def routes(self) -> list[Route]:
        return [
            Route("/enroll", self.enroll, methods=["POST"]),
            Route("/devices/{device_id}/status", self.status, methods=["POST"]),
            Route("/devices/{device_id}/selftest", self.selftest, methods=["POST"]),
        ]

    async def enroll(self, request: Request) -> Response:
        from agent.collector.app import run

        doc = await _json_body(request)
        code, device = doc.get("code"), doc.get("device_id")
        if not isinstance(code, str) or not isinstance(device, str):
            raise tus.TusError(400, 'body must be {"code": CODE, "device_id": ID}')
        try:
            got = await run(enrollment.redeem, self.api.c.store, code, device)
        except enrollment.Refused as exc:
            return JSONResponse({"error": str(exc), "why": exc.why},
                                status_code=409 if exc.why == "taken" else 403)
        except InputError as exc:
            raise tus.TusError(400, str(exc)) from exc
        return JSONResponse({"device_id": got.device_id, "token": got.token,
                             "next_seq": got.next_seq}, status_code=201)

    async def _device(self, request: Request) -> str:
        who = await self.api._who(request)
        device = str(request.path_params["device_id"])
        if who.device != device:
            raise tus.TusError(403, "a device may only report for itself")
        return device

    async def status(self, request: Request) -> Response:
        from agent.collector.app import run

        device = await self._device(request)
        doc = await _json_body(request)
        doc["received"] = time.time()
        await run(self.api.c.store.put_document, "status", device, "latest", doc, time.time())
        return Response(status_code=204)

    async def selftest(self, request: Request) -> Response:
        from agent.collector.app import run

        device = await self._device(request)
        doc = await _json_body(request)
        doc["received"] = time.time()
        key = f"{float(doc.get('started') or time.time()):017.3f}"
        store = self.api.c.store
        await run(store.put_document, "selftest", device, key, doc, time.time())
        return Response(status_code=204)
