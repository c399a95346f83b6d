"""A minimal tus 1.0 server that hashes and discards what it receives (uvicorn, loopback).

For measuring the client alone (memory, goodput) without a disk in the way. It speaks the
wearcap contract's verified header, so the client treats it like the collector.

    python tests/tussink.py [PORT]     prints "listening PORT"
"""

from __future__ import annotations

import base64
import hashlib
import socket
import sys
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPLOADS: dict[str, dict[str, Any]] = {}
TUS = {"Tus-Resumable": "1.0.0"}


async def files(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(status_code=204, headers={
            **TUS, "Tus-Version": "1.0.0", "Tus-Extension": "creation,termination"})
    length = int(request.headers["upload-length"])
    meta = {}
    for part in request.headers.get("upload-metadata", "").split(","):
        k, _, v = part.strip().partition(" ")
        meta[k] = base64.b64decode(v).decode()
    uid = uuid.uuid4().hex
    UPLOADS[uid] = {"length": length, "offset": 0, "h": hashlib.sha256(), "meta": meta}
    return Response(status_code=201, headers={**TUS, "Location": f"/files/{uid}"})


def _verified(up: dict[str, Any]) -> dict[str, str]:
    if up["offset"] == up["length"] and up["h"].hexdigest() == up["meta"].get("sha256"):
        return {"Wearcap-Verified": f"sha256={up['meta']['sha256']}"}
    return {}


async def upload(request: Request) -> Response:
    up = UPLOADS.get(request.path_params["uid"])
    if up is None:
        return Response(status_code=404, headers=TUS)
    if request.method == "HEAD":
        return Response(status_code=200, headers={
            **TUS, "Upload-Offset": str(up["offset"]), "Upload-Length": str(up["length"]),
            "Cache-Control": "no-store", **_verified(up)})
    if request.method == "DELETE":
        UPLOADS.pop(request.path_params["uid"], None)
        return Response(status_code=204, headers=TUS)
    if int(request.headers.get("upload-offset", -1)) != up["offset"]:
        return Response(status_code=409, headers=TUS)
    async for piece in request.stream():
        take = piece[: up["length"] - up["offset"]]
        up["h"].update(take)
        up["offset"] += len(take)
    return Response(status_code=204, headers={
        **TUS, "Upload-Offset": str(up["offset"]), **_verified(up)})


app = Starlette(routes=[
    Route("/files/", files, methods=["POST", "OPTIONS"]),
    Route("/files/{uid}", upload, methods=["HEAD", "PATCH", "DELETE"]),
])


def main() -> None:
    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sock = socket.create_server(("127.0.0.1", port))
    print(f"listening {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
