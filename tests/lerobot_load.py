"""Run in the LeRobot environment (.venv-lerobot): open a dataset with LeRobot's own
LeRobotDataset, read every frame and feature, and print what was read as JSON.

    .venv-lerobot/bin/python tests/lerobot_load.py DATASET_DIR
"""

from __future__ import annotations

import json
import sys

from ledataset.datasets.lerobot_dataset import LeRobotDataset  # type: ignore[import-not-found]


def _thumb(img) -> list[float]:
    """(3, H, W) floats in [0, 1] -> gray means of 8x8 blocks (a fingerprint of the frame)."""
    g = img.mean(0)
    h, w = g.shape[0] // 8 * 8, g.shape[1] // 8 * 8
    return [round(float(x), 4) for x in g[:h, :w].reshape(h // 8, 8, w // 8, 8).mean((1, 3))
            .flatten()]


def main(root: str) -> None:
    ds = LeRobotDataset("local/wearcap-export", root=root)
    out: dict = {"num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "fps": ds.fps,
                 "video_keys": ds.meta.video_keys, "backend": ds.video_backend, "items": []}
    lengths = [int(ds.meta.episodes[i]["length"]) for i in range(ds.num_episodes)]
    out["lengths"] = lengths
    for i in range(len(ds)):
        item = ds[i]  # decodes the frame at its timestamp, within 1e-4 s, or raises
        row = {"episode_index": int(item["episode_index"]), "frame_index": int(item["frame_index"]),
               "timestamp": float(item["timestamp"]),
               "shape": list(item[ds.meta.video_keys[0]].shape),
               "thumb": _thumb(item[ds.meta.video_keys[0]])}
        for k, v in item.items():
            if k.endswith("_ns"):
                row[k] = int(v)
            elif k.endswith((".acc", ".gyro")):
                row[k] = [float(x) for x in v]
        out["items"].append(row)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
