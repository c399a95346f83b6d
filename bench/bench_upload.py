"""Upload benchmarks for the sync service, each figure a ratio against a baseline measured in
the same run (budgets from the design brief):

1. goodput through a throttled proxy (default 2 MB/s link) as a ratio of the same link
   carrying the same bytes in one bare httpx request (budget >= 0.90);
2. bytes re-sent after a cut mid-chunk, as a fraction of the chunk size (budget <= 1);
3. sync RSS over a multi-GB backlog (sparse files), start vs end and peak, next to a bare
   python process's RSS (budget: flat, <= 60 MB).

    python bench/bench_upload.py [--json] [--rate 2e6] [--size-mb 24] [--backlog-gb 4]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from faultproxy import FaultProxy  # noqa: E402
from sync_servers import DEVICE, collector, make_segments, tus_sink, write_config  # noqa: E402

from agent import config  # noqa: E402
from agent.sync.service import SyncService  # noqa: E402

MB = 1024 * 1024


def sync_once(root: Path, url: str, token: str = "t", **sync: Any) -> tuple[float, Any]:
    spool = root / "spool"
    cfg = config.load(write_config(root / "agent.toml", url=url, spool=spool,
                                   token_file=root / "token", backoff_base=0.01,
                                   backoff_cap=0.1, **sync))
    t0 = time.perf_counter()
    summary = SyncService(cfg, spool=spool, token=token, once=True).run()
    return time.perf_counter() - t0, summary


def bare_upload(url: str, path: Path) -> float:
    """Baseline: the same bytes in one PATCH with a plain httpx client (no chunks, no
    state, no hashing)."""
    size = path.stat().st_size
    with httpx.Client(timeout=120) as c:
        r = c.post(url, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                                 "Upload-Metadata": ""})
        loc = httpx.URL(url).join(r.headers["location"])

        def body():
            with path.open("rb") as fh:
                while block := fh.read(64 * 1024):
                    yield block

        t0 = time.perf_counter()
        r = c.patch(loc, content=body(), headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": str(size),
            "Content-Type": "application/offset+octet-stream"})
        assert r.status_code == 204, r.status_code
        return time.perf_counter() - t0


def goodput(tmp: Path, rate: float, size: int) -> dict[str, Any]:
    with tus_sink(tmp) as sink, FaultProxy(sink.port) as proxy:
        proxy.rate = rate
        url = proxy.url + "/files/"
        base = tmp / "bare"
        (path,) = make_segments(base, DEVICE, 1, size, seed=1)
        bare_s = bare_upload(url, path)
        run = tmp / "sync"
        run.mkdir()
        (run / "token").write_text("t")
        make_segments(run / "spool", DEVICE, 1, size, seed=2)
        sync_s, summary = sync_once(run, url)
        assert summary.ok, summary.to_dict()
    bare_bps, sync_bps = size / bare_s, size / sync_s
    return {"link_rate_Bps": rate, "size_bytes": size, "bare_Bps": round(bare_bps),
            "sync_Bps": round(sync_bps), "goodput_ratio": round(sync_bps / bare_bps, 3),
            "vs_nominal_link": round(sync_bps / rate, 3), "budget": ">= 0.90"}


def resend_after_cut(tmp: Path, chunk: int, trials: int, seed: int) -> dict[str, Any]:
    """Against the wearcap collector: each run uploads its own segment (new sequence
    number), once clean as the baseline, then with one cut at a random point."""
    rng = random.Random(seed)
    size = 8 * chunk + chunk // 3
    extras = []
    with collector(tmp) as col, FaultProxy(col.port) as proxy:
        url = proxy.url + "/files/"

        def one(i: int, cut: int | None) -> int:
            run = tmp / f"run{i}"
            run.mkdir()
            (run / "token").write_text(col.token)
            make_segments(run / "spool", DEVICE, 1, size, start=i, seed=i)
            proxy.bytes_up = 0
            if cut is not None:
                proxy.cut_after(cut)
            _, summary = sync_once(run, url, token=col.token, chunk_bytes=chunk)
            assert summary.ok, summary.to_dict()
            return proxy.bytes_up

        baseline = one(0, None)
        for i in range(1, trials + 1):
            extras.append(one(i, rng.randint(chunk, size - chunk)) - baseline)
    return {"server": "wearcap collector", "chunk_bytes": chunk, "trials": trials,
            "resent_bytes_max": max(extras), "resent_bytes_mean": round(sum(extras) / len(extras)),
            "resent_over_chunk_max": round(max(extras) / chunk, 3), "budget": "<= 1.0"}


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(proc: subprocess.Popen[bytes], every: float = 0.1) -> list[int]:
    out = []
    while proc.poll() is None:
        kb = rss_kb(proc.pid)
        if kb:
            out.append(kb)
        time.sleep(every)
    return out


def rss_backlog(tmp: Path, gb: float, seg_mb: int) -> dict[str, Any]:
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    bare_kb = max(sample(bare, 0.05) or [0])
    n = max(2, int(gb * 1024 / seg_mb))
    spool = tmp / "spool"
    make_segments(spool, DEVICE, n, seg_mb * MB, sparse=True)
    (tmp / "token").write_text("t")
    with tus_sink(tmp) as sink:
        cfg = write_config(tmp / "agent.toml", url=sink.url, spool=spool,
                           token_file=tmp / "token")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "agent", "sync", "--config", str(cfg),
                                 "--once", "--json"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        samples = sample(proc)
        out = json.loads(proc.stdout.read() if proc.stdout else b"{}")
        elapsed = time.perf_counter() - t0
    assert out.get("ok"), out
    # "start" = once the first segment is under way (imports done), "end" = the last samples
    warm = samples[len(samples) // 10:] or samples
    start, end = warm[0], warm[-1]
    return {"backlog_bytes": n * seg_mb * MB, "segments": n, "elapsed_s": round(elapsed, 1),
            "bare_python_rss_kb": bare_kb, "sync_rss_start_kb": start,
            "sync_rss_end_kb": end, "sync_rss_peak_kb": max(samples),
            "end_over_start": round(end / start, 3),
            "peak_over_bare_python": round(max(samples) / bare_kb, 2),
            "budget": "flat, peak <= 60 MB"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=2e6, help="throttled link, bytes/s")
    ap.add_argument("--size-mb", type=int, default=24, help="file size for the goodput run")
    ap.add_argument("--chunk", type=int, default=1 * MB, help="chunk size for the cut runs")
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--backlog-gb", type=float, default=4.0)
    ap.add_argument("--segment-mb", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # retries after the injected cuts are expected
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wearcap-bench-") as tmp:
        t = Path(tmp)
        for name, fn in [
            ("goodput", lambda d: goodput(d, args.rate, args.size_mb * MB)),
            ("resend_after_cut", lambda d: resend_after_cut(d, args.chunk, args.cuts,
                                                            args.seed)),
            ("rss_backlog", lambda d: rss_backlog(d, args.backlog_gb, args.segment_mb)),
        ]:
            d = t / name
            d.mkdir()
            res[name] = fn(d)
            if not args.json:
                print(f"{name}: {res[name]}", flush=True)
    g, c, r = res["goodput"], res["resend_after_cut"], res["rss_backlog"]
    res["pass"] = {"goodput": g["goodput_ratio"] >= 0.9,
                   "resend": c["resent_over_chunk_max"] <= 1.0,
                   "rss": r["sync_rss_peak_kb"] <= 60 * 1024 and r["end_over_start"] <= 1.1}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"goodput {g['goodput_ratio']:.1%} of the bare link ({g['sync_Bps'] / 1e6:.2f} "
              f"MB/s vs {g['bare_Bps'] / 1e6:.2f})  |  re-sent after a cut: "
              f"{c['resent_over_chunk_max']:.2f} chunk (max of {c['trials']})  |  RSS "
              f"{r['sync_rss_start_kb'] / 1024:.1f} -> {r['sync_rss_end_kb'] / 1024:.1f} MB "
              f"(peak {r['sync_rss_peak_kb'] / 1024:.1f}; bare python "
              f"{r['bare_python_rss_kb'] / 1024:.1f}) over {r['backlog_bytes'] / 2**30:.1f} GiB")
    return 0 if all(res["pass"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
