"""The error tree of wearcap. Every error the agent raises on purpose derives from WearcapError.

    WearcapError                 exit 1 unless stated
    ├── UsageError               exit 2: bad command-line input
    ├── ConfigError              exit 2: a config file is wrong (path, key, value, allowed)
    ├── InputError               exit 2: a file given on the command line cannot be read as asked
    ├── SourceError              a sensor or camera failed (device)
    ├── SpoolError               the spool cannot be written or read (path)
    │   └── DiskFullError        the spool's disk budget is exhausted by un-uploaded data
    ├── SyncError                an upload failed (segment, status)
    │   └── ServerRejected       the server refused the upload for good (status)
    └── CollectorError           the collection server cannot start or store

Adapters translate library errors at the boundary with ``raise ... from exc``.
The command line prints ``wearcap: error: <message>`` and exits with ``exit_code``; never a
traceback for an error in this tree.
"""

from __future__ import annotations


class WearcapError(Exception):
    exit_code = 1


class UsageError(WearcapError):
    exit_code = 2


class InputError(WearcapError):
    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ConfigError(WearcapError):
    exit_code = 2

    def __init__(
        self,
        path: str,
        key: str,
        problem: str,
        *,
        value: object = None,
        allowed: str | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.value = value
        self.allowed = allowed
        self.problem = problem
        where = f"{path}: {key}" if key else path
        msg = f"{where}: {problem}"
        if value is not None:
            msg += f" (got {value!r})"
        if allowed:
            msg += f"; allowed: {allowed}"
        super().__init__(msg)


class SourceError(WearcapError):
    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(f"{device}: {message}" if device else message)
        self.device = device


class SpoolError(WearcapError):
    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class DiskFullError(SpoolError):
    pass


class SyncError(WearcapError):
    def __init__(
        self, message: str, *, segment: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.segment = segment
        self.status = status


class ServerRejected(SyncError):
    pass


class CollectorError(WearcapError):
    pass
