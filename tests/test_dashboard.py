"""The fleet dashboard, read in a real headless Chromium: the devices of a demo run, their
completeness and selftest, and a thumbnail of the newest keyframe that really decoded."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO, run_cli
from sync_servers import _start

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="chromium is not installed (./install.sh --dev installs it)")


class _Dom(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.imgs: list[dict[str, str | None]] = []
        self.body: dict[str, str | None] = {}
        self._row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "tr" and a.get("data-device"):
            self._row = a["data-device"]
            self.rows[self._row] = []
        if tag == "img":
            self.imgs.append({**a, "row": self._row})

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row:
            self.rows[self._row].append(data)


def _render(url: str, profile: Path) -> _Dom:
    """The page after its scripts ran, as Chromium rendered it."""
    assert CHROMIUM is not None
    res = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                          "--no-first-run", f"--user-data-dir={profile}",
                          "--virtual-time-budget=30000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = _Dom()
    dom.feed(res.stdout)
    return dom


@needs_chromium
def test_dashboard_shows_the_demo_devices_with_a_decoded_thumbnail(tmp_path: Path) -> None:
    demo = run_cli("demo", "--duration", "5", "--segment-seconds", "2", "--dir",
                   str(tmp_path / "demo"), "--json", timeout=300)
    assert demo.returncode == 0, demo.stderr[-3000:]
    data = tmp_path / "demo" / "collector"
    admin = run_cli("collector", "admin-token", "--data", str(data)).stdout.strip()
    srv = _start([sys.executable, "-m", "agent", "collector", "--data", str(data), "--listen",
                  "127.0.0.1:0", "--thumbnails"], r"listening on http://127\.0\.0\.1:(\d+)",
                 data, cwd=REPO)
    try:
        base = srv.url.removesuffix("/files/")
        # the data behind the page is for admins only
        assert httpx.get(f"{base}/dashboard/data").status_code == 401
        device_token = (tmp_path / "demo" / "token").read_text().strip()
        r = httpx.get(f"{base}/dashboard/data",
                      headers={"Authorization": f"Bearer {device_token}"})
        assert r.status_code == 403
        assert httpx.get(f"{base}/dashboard/thumbnail/sim-0001",
                         headers={"Authorization": f"Bearer {device_token}"}).status_code == 403

        dom = _render(f"{base}/dashboard#token={admin}", tmp_path / "chromium")
        assert dom.body.get("data-loaded") == "yes", dom.rows
        assert list(dom.rows) == ["sim-0001"]
        text = " ".join(dom.rows["sim-0001"])
        verified = json.loads(demo.stdout)["collector"][0]["verified"]
        assert f"{verified} verified" in text and "none missing" in text
        (img,) = [i for i in dom.imgs if i["row"] == "sim-0001"]
        assert int(img.get("data-natural-width") or 0) == 320  # the JPEG really decoded
    finally:
        srv.stop()


@needs_chromium
def test_thumbnails_are_off_by_default(tmp_path: Path) -> None:
    data = tmp_path / "c"
    data.mkdir()
    assert run_cli("collector", "enroll", "rig-1", "--data", str(data)).returncode == 0
    admin = run_cli("collector", "admin-token", "--data", str(data)).stdout.strip()
    srv = _start([sys.executable, "-m", "agent", "collector", "--data", str(data), "--listen",
                  "127.0.0.1:0"], r"listening on http://127\.0\.0\.1:(\d+)", data,
                 cwd=REPO)
    try:
        base = srv.url.removesuffix("/files/")
        r = httpx.get(f"{base}/dashboard/thumbnail/rig-1",
                      headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 404 and "thumbnails are off" in r.text
        dom = _render(f"{base}/dashboard#token={admin}", tmp_path / "chromium")
        assert "thumbnails off" in " ".join(dom.rows["rig-1"])
        assert not dom.imgs
    finally:
        srv.stop()
