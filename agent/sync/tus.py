"""A sans-IO tus 1.0 client: which request to send next, and what each response means.

``TusUpload`` never touches a socket or a file. The adapter (``uploader.py``) asks
``next_request()``, sends it (streaming the byte range a PATCH names from disk), and feeds the
answer to ``receive()``, which returns one event:

    Created(url)        the server made an upload: store the URL *before* sending data
    Progress(offset)    the server holds this many bytes
    Verified(sha256)    the server confirmed the whole file's SHA-256: terminal
    Unverifiable(why)   complete on a server that cannot confirm it: terminal, never evict
    Restarted(why)      the server's upload is gone or wrong: forget the URL, create again
    Resync(why)         offset unknown (409, 460, odd answer): HEAD, then continue
    Retry(why)          transient failure: back off, then resume (``auth`` for 401)
    Rejected(why)       the server refused this segment for good (400/403/413/...): terminal

A hostile or broken server can only ever produce Retry/Resync/Restarted/Rejected: the local
file is never touched here, so no answer can lose data. Facts: ``notes/sync.md``.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from agent import contract
from agent.contract import TUS_VERSION as TUS_VERSION
from agent.contract import decode_metadata as decode_metadata
from agent.contract import encode_metadata as encode_metadata

VERIFIED_HEADER = contract.VERIFIED_HEADER.lower()
"""As looked up in the lower-cased response headers."""
MAX_VALUE = 2048
"""Longest header value interpreted; longer ones count as garbage."""
CHECKSUM_PREFERENCE = ("sha1", "sha256")
"""sha1 first: the protocol requires it and it is the cheaper hash on a Cortex-A53."""
MAX_RESYNCS = 3
"""Resyncs (409/460) without progress before backing off, so that no answer loops forever."""
MAX_RESTARTS = 2
"""Fresh creations in one run before backing off."""



class Phase(enum.Enum):
    CREATE = "create"
    HEAD = "head"
    PATCH = "patch"
    DOWNLOAD = "download"
    TERMINATE = "terminate"
    DONE = "done"


_C, _H, _P, _D, _T, _X = (Phase.CREATE, Phase.HEAD, Phase.PATCH, Phase.DOWNLOAD,
                          Phase.TERMINATE, Phase.DONE)
TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    # the upload's lifecycle, at a glance: (phase, what the answer meant) -> next phase
    (_C, "created"): _H,      # Location stored: ask where the server stands
    (_H, "partial"): _P,      # the server holds a prefix: send the rest
    (_H, "complete"): _D,     # all bytes there, not confirmed: download and hash
    (_P, "progress"): _P,
    (_P, "complete"): _H,     # last chunk sent, not confirmed: a HEAD may confirm it
    (_P, "resync"): _H,       # 409/460/odd offset: ask again
    (_P, "failed"): _H,       # any other error: ask again after the backoff
    (_P, "cut"): _H,          # no answer: the offset is unknown
    (_D, "cut"): _H,
    (_H, "mismatch"): _T,     # the server holds other bytes: delete them (termination)
    (_D, "mismatch"): _T,
    (_T, "terminated"): _C,
    **{(ph, "gone"): _C for ph in (_H, _P, _D, _T)},  # 404/410 or no termination: anew
    **{(ph, "finished"): _X for ph in (_C, _H, _P, _D, _T)},  # a terminal event
}
"""Every phase change of :class:`TusUpload` goes through this table (``_go``); a pair not in
it is a bug, raised at once."""


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Caps:
    """What a server offers, from its OPTIONS answer."""

    extensions: frozenset[str] = frozenset()
    checksum_algorithms: tuple[str, ...] = ()
    max_size: int | None = None

    @property
    def checksum(self) -> str | None:
        for algo in CHECKSUM_PREFERENCE:
            if "checksum" in self.extensions and algo in self.checksum_algorithms:
                return algo
        return None

    @property
    def termination(self) -> bool:
        return "termination" in self.extensions


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: tuple[int, int] | None = None
    """(offset, length) of the file to send as the body (PATCH)."""
    checksum: str | None = None
    """Algorithm whose ``Upload-Checksum`` the adapter adds over the body, if any."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Created:
    url: str


@dataclass(frozen=True, slots=True)
class Progress:
    offset: int


@dataclass(frozen=True, slots=True)
class Verified:
    sha256: str


@dataclass(frozen=True, slots=True)
class Unverifiable:
    reason: str


@dataclass(frozen=True, slots=True)
class Restarted:
    reason: str
    repair: bool = False
    """The server held bytes other than the file's; they are discarded and sent again."""


@dataclass(frozen=True, slots=True)
class Resync:
    reason: str
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str
    status: int | None = None
    auth: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    status: int | None = None


Event = Created | Progress | Verified | Unverifiable | Restarted | Resync | Retry | Rejected
TERMINAL = (Verified, Unverifiable, Rejected)


# ---------------------------------------------------------------- helpers


def checksum_header(algo: str, digest: bytes) -> str:
    return f"{algo} {base64.b64encode(digest).decode()}"


def parse_int(value: str | None) -> int | None:
    """A non-negative decimal header value (at most 2^63-1), or None for missing/garbage."""
    if value is None:
        return None
    return contract.parse_uint(value.strip())


def parse_caps(resp: Response) -> Caps | None:
    """Caps from an OPTIONS answer; None if the server does not speak tus 1.0.0."""
    if resp.status not in (200, 204):
        return None
    versions = _list(resp.headers.get("tus-version", TUS_VERSION))
    if TUS_VERSION not in versions:
        return None
    return Caps(
        extensions=frozenset(_list(resp.headers.get("tus-extension", ""))),
        checksum_algorithms=tuple(_list(resp.headers.get("tus-checksum-algorithm", ""))),
        max_size=parse_int(resp.headers.get("tus-max-size")),
    )


def _list(value: str) -> list[str]:
    if len(value) > MAX_VALUE:
        return []
    return [v.strip().lower() for v in value.split(",") if v.strip()]


def _reason(resp: Response, what: str) -> str:
    text = resp.body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
    return f"{what}: HTTP {resp.status}" + (f" ({text})" if text else "")


def _failure(resp: Response, what: str) -> Event:
    """The meaning of an error status shared by every request."""
    if resp.status == 401:
        return Retry(_reason(resp, what), resp.status, auth=True)
    if resp.status in (400, 403, 412, 413, 415):
        return Rejected(_reason(resp, what), resp.status)
    return Retry(_reason(resp, what), resp.status)


# ---------------------------------------------------------------- the machine


@dataclass
class TusUpload:
    """One segment's upload. Construct with the stored ``url``/``offset`` to resume."""

    base_url: str
    length: int
    sha256: str
    metadata: Mapping[str, str]
    caps: Caps
    chunk_bytes: int
    auth_headers: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    offset: int | None = None
    phase: Phase = Phase.CREATE
    _sent: tuple[int, int] | None = None
    _resyncs: int = 0
    _restarts: int = 0

    def __post_init__(self) -> None:
        self.phase = Phase.CREATE if self.url is None else Phase.HEAD
        self.offset = None

    # -- requests

    def _headers(self, **extra: str) -> tuple[tuple[str, str], ...]:
        h = {"Tus-Resumable": TUS_VERSION, **self.auth_headers}
        h.update({k.replace("_", "-"): v for k, v in extra.items()})
        return tuple(h.items())

    def next_request(self) -> Request | None:
        """The request to send now, or None once a terminal event was returned."""
        if self.phase is Phase.CREATE:
            return Request("POST", self.base_url, self._headers(
                Upload_Length=str(self.length),
                Upload_Metadata=encode_metadata(self.metadata)))
        assert self.url is not None or self.phase is Phase.DONE
        if self.phase is Phase.HEAD:
            return Request("HEAD", str(self.url), self._headers())
        if self.phase is Phase.PATCH:
            assert self.offset is not None
            n = min(self.chunk_bytes, self.length - self.offset)
            self._sent = (self.offset, n)
            return Request("PATCH", str(self.url), self._headers(
                Upload_Offset=str(self.offset),
                Content_Type="application/offset+octet-stream",
                Content_Length=str(n)), body=(self.offset, n), checksum=self.caps.checksum)
        if self.phase is Phase.DOWNLOAD:
            return Request("GET", str(self.url), self._headers())
        if self.phase is Phase.TERMINATE:
            return Request("DELETE", str(self.url), self._headers())
        return None

    # -- responses

    def receive(self, resp: Response) -> Event:
        handler = {
            Phase.CREATE: self._on_create, Phase.HEAD: self._on_head,
            Phase.PATCH: self._on_patch, Phase.TERMINATE: self._on_terminate,
        }.get(self.phase)
        if handler is None:
            raise RuntimeError(f"no response expected in phase {self.phase.value}")
        ev = handler(resp)
        if isinstance(ev, TERMINAL) and self.phase is not Phase.DONE:
            self._go("finished")
        return ev

    def _go(self, outcome: str) -> None:
        try:
            self.phase = TRANSITIONS[(self.phase, outcome)]
        except KeyError:
            raise RuntimeError(f"tus client: no transition from {self.phase.value} on "
                               f"{outcome}") from None

    def network_error(self, reason: str) -> Event:
        """The request failed without an answer (connect, cut, timeout, stall)."""
        if self.phase in (Phase.PATCH, Phase.DOWNLOAD):
            self._go("cut")
            self.offset = None
        elif self.phase is Phase.TERMINATE:
            return self._forget(f"termination failed ({reason}); creating anew")
        return Retry(reason)

    def downloaded(self, sha256: str | None, status: int | None = None) -> Event:
        """The adapter downloaded the upload (GET) and hashed it; None if it could not."""
        if sha256 is None:
            if status is not None and status >= 500:
                return Retry(f"download for verification: HTTP {status}", status)
            self._go("finished")
            return Unverifiable("complete on the server, which can neither confirm its "
                                f"SHA-256 nor serve it back (HTTP {status})")
        if sha256 == self.sha256:
            self._go("finished")
            return Verified(sha256)
        return self._terminate(f"server holds different bytes (sha256 {sha256[:16]}...)")

    # -- phase handlers

    def _on_create(self, resp: Response) -> Event:
        if resp.status == 409:
            return Rejected(_reason(resp, "server holds a different segment with this id"), 409)
        if resp.status not in (200, 201):
            return _failure(resp, "create")
        url = self._location(resp.headers.get("location"))
        if url is None:
            return Retry("create: missing or foreign Location", resp.status)
        self.url, self.offset = url, None
        self._go("created")
        return Created(url)

    def _on_head(self, resp: Response) -> Event:
        if resp.status in (404, 410):
            return self._forget(f"upload gone on the server (HTTP {resp.status})")
        if resp.status not in (200, 204):
            return _failure(resp, "head")
        offset = parse_int(resp.headers.get("upload-offset"))
        if offset is None:
            return Retry("head: missing or garbage Upload-Offset", resp.status)
        length = parse_int(resp.headers.get("upload-length"))
        if offset > self.length or (length is not None and length != self.length):
            return self._terminate(f"server upload does not match the file "
                                   f"(offset {offset}, length {length}, ours {self.length})")
        self.offset = offset
        if offset == self.length:
            if self._verified_by(resp):
                self._go("finished")
                return Verified(self.sha256)
            self._go("complete")
            return Progress(offset)
        self._go("partial")
        return Progress(offset)

    def _on_patch(self, resp: Response) -> Event:
        assert self._sent is not None
        start, n = self._sent
        if resp.status in (404, 410):
            return self._forget(f"upload gone on the server (HTTP {resp.status})")
        if resp.status in (409, 460):
            what = "offset mismatch" if resp.status == 409 else "checksum mismatch"
            return self._resync(_reason(resp, f"patch: {what}"), resp.status)
        if resp.status not in (200, 204):
            self._go("failed")
            self.offset = None
            return _failure(resp, "patch")
        offset = parse_int(resp.headers.get("upload-offset"))
        if offset is None or not start < offset <= start + n:
            return self._resync(f"patch: implausible Upload-Offset "
                                f"{resp.headers.get('upload-offset', '')[:40]!r} after sending "
                                f"{start}+{n}", resp.status)
        self.offset, self._resyncs = offset, 0
        if offset == self.length:
            if self._verified_by(resp):
                self._go("finished")
                return Verified(self.sha256)
            self._go("complete")  # a HEAD may carry the verified header
        else:
            self._go("progress")
        return Progress(offset)

    def _on_terminate(self, resp: Response) -> Event:
        return self._forget(f"terminated the server's upload (HTTP {resp.status})")

    # -- transitions

    def _verified_by(self, resp: Response) -> bool:
        value = resp.headers.get(VERIFIED_HEADER, "")
        return value.strip().lower() == f"sha256={self.sha256}"

    def _location(self, loc: str | None) -> str | None:
        """The absolute upload URL; only on the base URL's own origin (the token goes there)."""
        if not loc or len(loc) > MAX_VALUE or any(c in loc for c in "\r\n\0 "):
            return None
        url = urljoin(self.base_url, loc)
        a, b = urlsplit(url), urlsplit(self.base_url)
        if (a.scheme, a.netloc) != (b.scheme, b.netloc) or a.scheme not in ("http", "https"):
            return None
        return url

    def _resync(self, reason: str, status: int | None) -> Event:
        self._go("resync")
        self.offset = None
        self._resyncs += 1
        if self._resyncs > MAX_RESYNCS:
            self._resyncs = 0
            return Retry(f"{reason} (repeated)", status)
        return Resync(reason)

    def _terminate(self, reason: str) -> Event:
        """The server's upload holds other bytes than the file: a repair, always reported."""
        if self.caps.termination:
            self._go("mismatch")
            return Resync(reason, repair=True)
        return self._forget(reason, repair=True)

    def _forget(self, reason: str, repair: bool = False) -> Event:
        self._go("terminated" if self.phase is Phase.TERMINATE else "gone")
        self.url, self.offset = None, None
        self._restarts += 1
        if self._restarts > MAX_RESTARTS:
            return Retry(f"{reason} (restarted {self._restarts} times)")
        return Restarted(reason, repair)
