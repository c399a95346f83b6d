"""wearcap collector: the reference collection server (tus 1.0) and its admin actions.

Serve (the contract ``wearcap collector [--data D] [--listen HOST:PORT]``)::

    wearcap collector --data D --listen 127.0.0.1:8750
      -> prints "wearcap collector: listening on http://127.0.0.1:8750/files/ ..." on stdout
         (with --listen 127.0.0.1:0 the line carries the port the system chose)

Enroll a device and get its token (printed once; only its hash is stored)::

    wearcap collector enroll DEVICE_ID --data D            -> the token alone on stdout
    wearcap collector enroll DEVICE_ID --data D --json     -> {"device_id": ..., "token": ...}

Enrolling works while the server runs (both use the same SQLite file in WAL mode), so a test
can start ``python -m agent collector --data D --listen 127.0.0.1:PORT`` in a child process,
run ``python -m agent collector enroll sim-0001 --data D`` (or call
``agent.collector.auth.enroll(open_store(D), "sim-0001")`` in-process),
and upload to ``http://127.0.0.1:PORT/files/`` with ``Authorization: Bearer <token>``.
Enrolling again replaces the token.

Other actions::

    wearcap collector admin-token --data D    token for POST /devices, GET /devices, any report
    wearcap collector token --role reader --data D [--json]   read-only data token (GET /data/...)
    wearcap collector token --role reader --revoke --data D   revoke it
    wearcap collector report --data D [--json] [--device ID]   completeness per device
    wearcap collector revoke DEVICE_ID --data D
    wearcap collector code --expires 24h --data D   one-time enrollment code(s) (provision)

S3-compatible storage instead of the local directory: ``--s3-bucket B`` (plus
``--s3-endpoint URL`` for MinIO/Ceph/..., ``--s3-prefix``, ``--s3-region``); the environment
variables WEARCAP_S3_BUCKET / WEARCAP_S3_ENDPOINT work too; credentials come from the usual
AWS variables. Staging and metadata stay in ``--data``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent.commands import positive_float

HELP = "reference collection server (tus), device enrollment and completeness report"
DEFAULT_LISTEN = "127.0.0.1:8750"


def default_data() -> str:
    env = os.environ.get("WEARCAP_COLLECTOR_DATA")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/wearcap/collector"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(xdg) / "wearcap" / "collector")


def _data_arg(p: argparse.ArgumentParser, top: bool) -> None:
    p.add_argument("--data", metavar="D", default=default_data() if top else argparse.SUPPRESS,
                   help="data directory (metadata, staging, local objects; default "
                        "$WEARCAP_COLLECTOR_DATA or ~/.local/share/wearcap/collector)")
    p.add_argument("--store", metavar="URL",
                   default=os.environ.get("WEARCAP_COLLECTOR_STORE", "") if top
                   else argparse.SUPPRESS,
                   help="metadata in PostgreSQL (postgresql://...) instead of SQLite in --data "
                        "(default $WEARCAP_COLLECTOR_STORE)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _data_arg(p, True)
    p.add_argument("--listen", metavar="HOST:PORT", default=DEFAULT_LISTEN,
                   help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 = any free)")
    p.add_argument("--max-size", type=int, default=None, metavar="BYTES",
                   help="Tus-Max-Size (default 4 GiB)")
    p.add_argument("--expire-hours", type=positive_float, default=168.0,
                   help="unfinished uploads expire after this long without progress")
    p.add_argument("--retention-days", type=non_negative_float,
                   default=os.environ.get("WEARCAP_COLLECTOR_RETENTION_DAYS") or "0", metavar="D",
                   help="purge verified segments this long after verification, leaving a "
                        "'retention' tombstone each (default 0: keep for ever; env "
                        "WEARCAP_COLLECTOR_RETENTION_DAYS)")
    p.add_argument("--export-retention-days", type=non_negative_float,
                   default=os.environ.get("WEARCAP_COLLECTOR_EXPORT_RETENTION_DAYS") or "7",
                   metavar="D", help="purge cached exports this long after they were made "
                                     "(default 7; 0: keep for ever)")
    p.add_argument("--public-url", metavar="URL", default="",
                   help="base URL clients reach this service at (the load balancer's behind "
                        "one); upload Locations are built from it, never from the Host header "
                        "(default: relative Locations, /files/ID)")
    g = p.add_argument_group("connection limits")
    g.add_argument("--header-timeout", type=positive_float, default=10.0, metavar="S",
                   help="close a connection whose request headers take longer (default 10)")
    g.add_argument("--keep-alive", type=positive_float, default=15.0, metavar="S",
                   help="close idle keep-alive connections after this long (default 15)")
    g.add_argument("--max-connections", type=int, default=0, metavar="N",
                   help="open connections at most (default: the open-file limit less 256)")
    g.add_argument("--max-unauthenticated", type=int, default=0, metavar="N",
                   help="connections without a valid token yet, at most (default: half of "
                        "--max-connections); the oldest waiting one makes room")
    g.add_argument("--per-token-requests", type=int, default=4, metavar="N",
                   help="requests in flight per bearer token (429 beyond; default 4)")
    g.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR[/BITS]",
                   help="peers that send a PROXY protocol header (v1/v2), e.g. the load "
                        "balancer; repeatable")
    p.add_argument("--s3-bucket", default=os.environ.get("WEARCAP_S3_BUCKET", ""),
                   help="store verified segments in this S3 bucket instead of --data/objects")
    p.add_argument("--s3-endpoint", default=os.environ.get("WEARCAP_S3_ENDPOINT", ""),
                   metavar="URL", help="S3-compatible endpoint (MinIO, Ceph, ...)")
    p.add_argument("--s3-region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    p.add_argument("--s3-prefix", default="", help="key prefix inside the bucket")
    p.add_argument("--thumbnails", action="store_true",
                   help="show admins a thumbnail of each rig's newest keyframe on /dashboard "
                        "(off by default: recordings show workers' homes)")
    p.add_argument("--s3-create-bucket", action="store_true",
                   help="create the bucket if it does not exist")
    p.add_argument("--staging", choices=("local", "s3"), default="local",
                   help="where unfinished uploads live: 'local' (--data/staging, one node) or "
                        "'s3' (multipart parts in the bucket: any node sharing --store and the "
                        "bucket continues any upload)")
    p.add_argument("--s3-part-mib", type=int, default=8, metavar="MIB",
                   help="multipart part size with --staging s3 (>= 5, S3's minimum; default 8)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    e = sub.add_parser("enroll", help="enroll a device; prints its token once")
    e.add_argument("device_id", metavar="DEVICE_ID")
    e.add_argument("--first-seq", type=_seq, default=0,
                   help="the device's first segment sequence number (for completeness)")
    e.add_argument("--json", action="store_true")
    _data_arg(e, False)
    a = sub.add_parser("admin-token", help="issue the admin token (replaces the old one)")
    a.add_argument("--json", action="store_true")
    _data_arg(a, False)
    t = sub.add_parser("token", help="issue (or --revoke) the token of a role: reader = "
                                     "read-only data access, admin = everything")
    t.add_argument("--role", required=True, choices=("reader", "admin"))
    t.add_argument("--revoke", action="store_true", help="revoke the role's token instead")
    t.add_argument("--json", action="store_true")
    _data_arg(t, False)
    r = sub.add_parser("report", help="completeness per device: received, verified, missing")
    r.add_argument("--device", help="only this device")
    r.add_argument("--json", action="store_true")
    _data_arg(r, False)
    c = sub.add_parser("code", help="issue a one-time enrollment code for wearcap provision")
    c.add_argument("--expires", default="24h", metavar="DURATION",
                   help="how long the code stays valid (24h, 90m, 2d; default 24h)")
    c.add_argument("--count", type=int, default=1, metavar="N",
                   help="issue N codes (one per rig), one per line")
    c.add_argument("--revoke", metavar="CODE", help="revoke an unused code instead")
    c.add_argument("--json", action="store_true")
    _data_arg(c, False)
    v = sub.add_parser("revoke", help="revoke a device's token")
    v.add_argument("device_id", metavar="DEVICE_ID")
    _data_arg(v, False)


def non_negative_float(text: str) -> float:
    from agent.commands import finite_float

    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _seq(text: str) -> int:
    from agent.contract import SEQ_MAX, parse_uint

    value = parse_uint(text.strip())
    if value is None:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {SEQ_MAX}, got {text!r}")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    from agent.errors import UsageError

    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), got {value!r}")
    return host, int(port_text)


def _db(args: argparse.Namespace) -> Any:
    from agent.collector.service import open_data_dir
    from agent.collector.store import open_store

    data = open_data_dir(Path(args.data))
    return open_store(getattr(args, "store", "") or data)


EXTRA_MODULES = ("starlette", "uvicorn", "boto3", "botocore")
"""What ``pip install 'wearcap[collector]'`` brings (the device install leaves it out)."""


def run(args: argparse.Namespace) -> int:
    from agent.errors import CollectorError

    try:
        return _dispatch(args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXTRA_MODULES:
            raise
        raise CollectorError(
            f"the collector needs its extra dependencies ({exc.name} is not installed): "
            "pip install 'wearcap[collector]' (or ./install.sh --dev in a checkout)") from None


def _dispatch(args: argparse.Namespace) -> int:
    action = getattr(args, "action", None)
    if action == "enroll":
        return _enroll(args)
    if action == "admin-token":
        return _admin(args)
    if action == "token":
        return _token(args)
    if action == "report":
        return _report(args)
    if action == "revoke":
        return _revoke(args)
    if action == "code":
        return _code(args)
    return _serve(args)


def _enroll(args: argparse.Namespace) -> int:
    from agent.collector import auth

    db = _db(args)
    token = auth.enroll(db, args.device_id, first_seq=args.first_seq)
    if args.json:
        print(json.dumps({"device_id": args.device_id, "token": token}))
    else:
        print(token)
        print(f"enrolled {args.device_id}; store this token on the device, it is not shown "
              f"again", file=sys.stderr)
    return 0


def _admin(args: argparse.Namespace) -> int:
    from agent.collector import auth

    token = auth.admin_token(_db(args))
    print(json.dumps({"token": token}) if args.json else token)
    return 0


def _token(args: argparse.Namespace) -> int:
    from agent.collector import auth
    from agent.errors import InputError

    store = _db(args)
    if args.revoke:
        if not auth.revoke_role(store, args.role):
            raise InputError(f"there is no {args.role} token to revoke")
        if args.json:
            print(json.dumps({"role": args.role, "revoked": True}))
        else:
            print(f"revoked the {args.role} token", file=sys.stderr)
        return 0
    token = auth.role_token(store, args.role)
    if args.json:
        print(json.dumps({"role": args.role, "token": token}))
    else:
        print(token)
        print(f"issued the {args.role} token (any earlier one stops working); it is not "
              "shown again", file=sys.stderr)
    return 0


def _code(args: argparse.Namespace) -> int:
    import time

    from agent.collector import enrollment
    from agent.errors import InputError

    store = _db(args)
    if args.revoke:
        if not enrollment.revoke(store, args.revoke):
            raise InputError(f"code {args.revoke!r} is unknown, already used or revoked")
        print(f"revoked code {enrollment.normalize(args.revoke)}", file=sys.stderr)
        return 0
    if not 1 <= args.count <= 10_000:
        raise InputError("--count must be from 1 to 10000")
    seconds = enrollment.parse_duration(args.expires)
    codes = [enrollment.issue(store, seconds) for _ in range(args.count)]
    if args.json:
        print(json.dumps([{"code": c, "expires": e} for c, e in codes], indent=2))
        return 0
    for code, _ in codes:
        print(code)
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(codes[0][1]))
    print(f"{len(codes)} single-use code(s), valid until {until}; on the rig: wearcap "
          "provision --collector URL --code CODE", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from agent.collector import auth
    from agent.errors import InputError

    if not auth.revoke(_db(args), args.device_id):
        raise InputError(f"device {args.device_id!r} has no token to revoke")
    print(f"revoked {args.device_id}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from agent.collector import completeness
    from agent.collector.store import DB_NAME
    from agent.errors import InputError

    if not getattr(args, "store", "") and not (Path(args.data) / DB_NAME).is_file():
        raise InputError("no collector data here (start the collector or enroll a device "
                         "first)", path=args.data)
    db = _db(args)
    if args.device:
        one = completeness.device_report(db, args.device)
        if one is None:
            raise InputError(f"device {args.device!r} is not enrolled")
        reports = [one]
    else:
        reports = completeness.fleet_report(db)
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"wearcap collector: {args.data}")
    for col in ("device", "received", "verified", "in progress", "highest seq", "missing",
                "missing seqs", "discarded", "expired", "GB"):
        table.add_column(col, justify="left" if col in ("device", "missing seqs") else "right")
    for r in reports:
        style = "green" if r["complete"] else ("red" if r["missing_count"] else "")
        table.add_row(r["device_id"], str(r["received"]), str(r["verified"]),
                      str(r["in_progress"]),
                      "-" if r["highest_seq"] is None else str(r["highest_seq"]),
                      str(r["missing_count"]), completeness.format_ranges(r["missing"]),
                      str(r["discarded_count"]), str(r["expired_count"]),
                      f"{r['verified_bytes'] / 1e9:.3f}", style=style)
    from agent.termout import console

    console().print(table)
    return 0


def _backend(args: argparse.Namespace) -> Any:
    if not args.s3_bucket:
        return None
    from agent.collector.s3 import S3Backend

    backend = S3Backend(args.s3_bucket, endpoint_url=args.s3_endpoint or None,
                        region=args.s3_region, prefix=args.s3_prefix)
    backend.check(create=args.s3_create_bucket)
    return backend


def _limits(args: argparse.Namespace) -> Any:
    from agent.collector.guard import Limits, parse_networks
    from agent.errors import UsageError

    for name in ("max_connections", "max_unauthenticated"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.per_token_requests < 1:
        raise UsageError("--per-token-requests must be at least 1")
    try:
        proxies = parse_networks(args.trusted_proxy)
    except ValueError as exc:
        raise UsageError(f"--trusted-proxy: {exc}") from None
    return Limits(header_timeout=args.header_timeout, keep_alive=args.keep_alive,
                  max_connections=args.max_connections,
                  max_unauthenticated=args.max_unauthenticated,
                  per_token_requests=args.per_token_requests, trusted_proxies=proxies)


def _public_url(args: argparse.Namespace) -> str:
    from urllib.parse import urlsplit

    from agent.errors import UsageError

    if not args.public_url:
        return ""
    u = urlsplit(args.public_url)
    if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment:
        raise UsageError(f"--public-url must be http(s)://HOST[:PORT][/PATH], got "
                         f"{args.public_url!r}")
    return str(args.public_url).rstrip("/")


def _serve(args: argparse.Namespace) -> int:
    import logging
    import socket

    import uvicorn

    from agent import sdnotify
    from agent.collector.app import build_app
    from agent.collector.guard import Guard, accept_batch, uvicorn_options
    from agent.collector.service import DEFAULT_MAX_SIZE, Collector
    from agent.collector.store import open_store
    from agent.errors import CollectorError, UsageError

    host, port = parse_listen(args.listen)
    if args.max_size is not None and args.max_size <= 0:
        raise UsageError("--max-size must be a positive number of bytes")
    guard = Guard(_limits(args))
    limits = guard.limits
    logging.getLogger("agent.collector").setLevel(logging.INFO)
    data = Path(args.data)
    backend = _backend(args)
    shared = None
    if args.staging == "s3":
        from agent.collector.s3staging import PART_MIN, S3Staging

        if backend is None:
            raise UsageError("--staging s3 needs --s3-bucket")
        if args.s3_part_mib * 1024 * 1024 < PART_MIN:
            raise UsageError(f"--s3-part-mib must be at least {PART_MIN >> 20}")
        shared = S3Staging(backend, data / "scratch", part_bytes=args.s3_part_mib << 20)
    store = open_store(args.store) if args.store else None
    collector = Collector(data, backend=backend, store=store, shared_staging=shared,
                          max_size=args.max_size or DEFAULT_MAX_SIZE,
                          expire_seconds=args.expire_hours * 3600,
                          retention_seconds=args.retention_days * 86400,
                          export_retention_seconds=args.export_retention_days * 86400)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family,
                                    backlog=accept_batch(limits))
    except OSError as exc:
        collector.close()
        raise CollectorError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from exc
    bound = sock.getsockname()[1]
    if shared is not None:  # a restarted node takes its own leases back at once
        shared.node = f"{socket.gethostname()}:{bound}"
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    public = _public_url(args)
    config = uvicorn.Config(build_app(collector, public_url=public, guard=guard,
                                      thumbnails=args.thumbnails),
                            log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, **uvicorn_options(guard))
    server = uvicorn.Server(config)
    print(f"wearcap collector: listening on http://{shown}:{bound}/files/ "
          f"(data {args.data}; metadata {collector.store.describe()}; storage "
          f"{collector.backend.describe()}; Locations "
          f"{public + '/files/...' if public else 'relative'}; at most "
          f"{guard.limits.max_connections} connections)", flush=True)
    sdnotify.notify("READY=1")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        collector.close()
    return 0
