"""Where wearcap calibrate writes a band's latency, and how (durably, keeping the file).

    path = config_target(cfg)                        # the file whose [[wrist]] tables apply
    write_latency(path, "left", 1.234, 0.41)         # [[wrist]] name = "left": latency_ms,
                                                     # latency_uncertainty_ms, latency_source

The edit goes through tomlkit, so every other line, comment and table stays as it was. The
new text must load as a config (agent.config.load) before it replaces the old: temp file in
the same directory, fsync, rename, fsync the directory (agent.durable.write_atomic), so a
power cut leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config


def config_target(cfg: Config) -> Path:
    """The file of ``cfg``'s stack that holds its [[wrist]] tables (the topmost with any);
    never a shipped profile (device_configs/): a rig's settings go in its own file."""
    from agent import config
    from agent.errors import ConfigError

    for src in reversed(cfg.sources):
        if "wrist" in config.read_toml(Path(src)):
            if config._is_profile(src):
                raise ConfigError(src, "wrist", "the bands come from a shipped profile, "
                                  "which a calibration must not change; give this rig its "
                                  "own config with its own [[wrist]] tables (--config), or "
                                  "use --dry-run")
            return Path(src)
    raise ConfigError(cfg.sources[-1] if cfg.sources else "config", "wrist",
                      "no [[wrist]] table in any file of this config")


def write_latency(path: Path, band: str, latency_ms: float, uncertainty_ms: float) -> None:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from agent import config
    from agent.durable import write_atomic
    from agent.errors import ConfigError

    try:
        doc = tomlkit.parse(path.read_text())
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except TOMLKitError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    tables = doc.get("wrist")
    entry = next((t for t in (tables or []) if t.get("name", "left") == band), None)
    if entry is None:
        raise ConfigError(str(path), "wrist", f"no [[wrist]] table with name = {band!r}")
    entry["latency_ms"] = latency_ms
    entry["latency_uncertainty_ms"] = uncertainty_ms
    entry["latency_source"] = "calibrated"  # recordings then say so (agent.wrist.timing)
    data = tomlkit.dumps(doc).encode()
    tmp = path.with_name(f".{path.name}.calibrate-check.toml")
    try:
        tmp.write_bytes(data)
        config.load(tmp)  # never write a config that does not load
    finally:
        tmp.unlink(missing_ok=True)
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot write: {exc.strerror or exc}") from None
