"""wearcap provision on the simulated rig, by script: code issued, enrolled, two bands paired
(left by shaking), config written, sequence floor stored, selftest passed; then the rig
records and syncs. Reused, expired and revoked codes are refused with what to do; an SD-card
swap re-provisions and carries the numbering on (no 409 for ever)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

from conftest import run_cli
from sync_servers import start_collector

from agent import config


def _code(data: Path, expires: str = "1h") -> str:
    res = run_cli("collector", "code", "--data", str(data), "--expires", expires)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _provision(url: str, code: str, device: str, etc: Path, spool: Path,
               *extra: str) -> tuple[int, dict[str, object], str]:
    res = run_cli("provision", "--collector", url, "--code", code, "--device-id", device,
                  "--config", str(etc / "agent.toml"), "--spool", str(spool), "--yes",
                  "--json", *extra, timeout=300)
    assert "Traceback" not in res.stderr, res.stderr
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = {}
    return res.returncode, doc, res.stderr


def test_scripted_provisioning_of_a_simulated_rig(tmp_path: Path) -> None:
    data = tmp_path / "collector"
    srv = start_collector(data)
    try:
        t0 = time.monotonic()
        code = _code(data)
        # The simulated wearer shakes the band the simulated rig calls "right": provisioning
        # must make it the left one (it judges motion, not addresses).
        rc, doc, err = _provision(srv.url, code, "rig-0042", tmp_path / "etc",
                                  tmp_path / "spool", "--simulate-shake", "00:AA:BB:CC:DD:02")
        took = time.monotonic() - t0
        print(f"provisioned a simulated rig in {took:.1f} s (provision itself "
              f"{doc.get('seconds')} s)")
        assert rc == 0, (err, [c for c in doc["selftest"]["checks"]  # type: ignore[index]
                               if c["result"] == "fail"])
        assert doc["bands"] == {"left": "00:AA:BB:CC:DD:02", "right": "00:AA:BB:CC:DD:01"}
        assert doc["selftest"]["ok"] is True  # type: ignore[index]
        token = tmp_path / "etc" / "token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        cfg = config.load(tmp_path / "etc" / "agent.toml")
        assert cfg.device.id == "rig-0042" and cfg.sync.url == srv.url
        assert [(w.name, w.address) for w in cfg.wrist] == [
            ("left", "00:AA:BB:CC:DD:02"), ("right", "00:AA:BB:CC:DD:01")]

        # ... and it records and syncs
        etc_cfg = str(tmp_path / "etc" / "agent.toml")
        rec = run_cli("run", "--config", etc_cfg, "--duration", "3", timeout=180)
        assert rec.returncode == 0, rec.stderr
        up = run_cli("sync", "--config", etc_cfg, "--once", "--json", timeout=180)
        assert up.returncode == 0, up.stderr
        first = json.loads(up.stdout)["verified"]
        assert first and all(s.startswith("rig-0042-") for s in first)

        # The same code again: refused, saying why and what to do.
        rc, _, err = _provision(srv.url, code, "rig-0043", tmp_path / "etc2",
                                tmp_path / "spool2", "--bands", "0", "--no-selftest")
        assert rc == 1 and "already used" in err and "wearcap collector code" in err

        # SD-card swap: a fresh card, same id. Taken until the old identity is revoked...
        fresh = _code(data)
        rc, _, err = _provision(srv.url, fresh, "rig-0042", tmp_path / "etc-new",
                                tmp_path / "spool-new", "--bands", "0", "--no-selftest")
        assert rc == 1 and "wearcap collector revoke rig-0042" in err
        assert run_cli("collector", "revoke", "rig-0042", "--data", str(data)).returncode == 0
        # ... then the same (unspent) code enrolls it, with the sequence floor
        rc, doc, err = _provision(srv.url, fresh, "rig-0042", tmp_path / "etc-new",
                                  tmp_path / "spool-new", "--bands", "0", "--no-selftest")
        assert rc == 0, err
        assert doc["next_seq"] == len(first)
        new_cfg = tmp_path / "etc-new" / "agent.toml"
        new_cfg.write_text(new_cfg.read_text() + '[camera]\nbackend = "none"\n')
        rec = run_cli("run", "--config", str(new_cfg), "--duration", "2", timeout=120)
        assert rec.returncode == 0, rec.stderr
        up = run_cli("sync", "--config", str(new_cfg), "--once", "--json", timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr  # not 409 "cannot overwrite"
        assert json.loads(up.stdout)["verified"][0] == f"rig-0042-{len(first):08d}"
    finally:
        srv.stop()


def test_expired_and_revoked_codes_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "collector"
    srv = start_collector(data)
    try:
        short = _code(data, "1s")
        revoked = _code(data)
        res = run_cli("collector", "code", "--data", str(data), "--revoke", revoked)
        assert res.returncode == 0, res.stderr
        time.sleep(1.5)
        rc, _, err = _provision(srv.url, short, "rig-1", tmp_path / "e1", tmp_path / "s1",
                                "--bands", "0", "--no-selftest")
        assert rc == 1 and "has expired" in err and "ask for a new one" in err
        rc, _, err = _provision(srv.url, revoked, "rig-1", tmp_path / "e2", tmp_path / "s2",
                                "--bands", "0", "--no-selftest")
        assert rc == 1 and "was revoked" in err
        rc, _, err = _provision(srv.url, "ZZZZ-ZZZZ-ZZZZ", "rig-1", tmp_path / "e3",
                                tmp_path / "s3", "--bands", "0", "--no-selftest")
        assert rc == 1 and "not known" in err
        assert not (tmp_path / "e1" / "token").exists()
        bad = run_cli("provision", "--collector", srv.url, "--device-id", "rig-1", "--yes",
                      "--config", str(tmp_path / "e4" / "agent.toml"), "--bands", "0")
        assert bad.returncode == 2 and "--code is required" in bad.stderr
        down = run_cli("provision", "--collector", "http://127.0.0.1:9/files/", "--code",
                       "AAAA-BBBB-CCCC", "--device-id", "rig-1", "--yes", "--bands", "0",
                       "--config", str(tmp_path / "e5" / "agent.toml"), "--no-selftest")
        assert down.returncode == 1 and "cannot reach the collector" in down.stderr
    finally:
        srv.stop()
