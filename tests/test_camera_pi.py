"""PiCamera against the picamera2 fake, and the canary that holds the fake to the real API.

The real picamera2 cannot be imported off a Pi (it needs libcamera), but its source can be
installed without its dependencies (install.sh --dev does ``pip install --no-deps
picamera2``). The canary reads that source with ``ast`` and checks that every class, method,
parameter and attribute the fake offers exists in the real package with a compatible
signature. Without the source the canary is skipped, saying why.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.camera.base import ParameterSets, nal_units
from agent.camera.open import open_camera
from agent.camera.pi import PiCamera, load_api
from agent.config import CameraSection
from agent.errors import SourceError
from tests.conftest import NOT_APPLICABLE
from tests.fakes import picamera2_fake as fake

FAKE_FILE = Path(fake.__file__)
CFG = CameraSection(backend="picamera2", width=640, height=480, fps=30.0,
                    keyframe_seconds=0.5, exposure_us=9000, ring_bytes=1024 * 1024)
T0 = 5_000_000_000_000
FRAME_NS = 33_333_000  # FrameDuration 33333 µs, as the adapter asks for at 30 fps


def started(cfg: CameraSection = CFG, **knobs):
    api = fake.make_api(**knobs)
    cam = PiCamera(cfg, api=api)
    cam.start()
    return cam, api.Picamera2._fake_instances[-1]


def types(data: bytes) -> list[int]:
    return [u[0] & 0x1F for u in nal_units(data) if u]


# --------------------------------------------------------------------------- adapter


def test_configures_the_camera_and_encoder_from_the_config():
    cam, pc = started()
    cfg = pc._fake_config
    assert cfg["main"]["size"] == (640, 480) and cfg["main"]["format"] == "YUV420"
    assert cfg["controls"]["FrameDurationLimits"] == (33333, 33333)
    enc = pc._fake_encoder
    assert isinstance(enc, fake.H264Encoder)
    assert (enc.bitrate, enc.repeat, enc.iperiod) == (4_000_000, True, 15)
    assert cam.encoder_name == "h264_v4l2m2m"
    cam.stop()
    cam2, pc2 = started(dataclasses.replace(CFG, encoder="libx264"))
    assert isinstance(pc2._fake_encoder, fake.LibavH264Encoder)
    assert pc2._fake_encoder.framerate == 30.0 and cam2.encoder_name == "libx264"
    cam2.stop()


def test_timestamps_are_absolute_sensor_times_and_mid_exposure_is_derived():
    jitter = (0, 1_234, 999, 0, 500_001)  # ns; sub-µs parts must survive
    cam, pc = started(jitter_ns=jitter)
    pc._fake_frames(10)
    frames = cam.poll()
    assert [f.index for f in frames] == list(range(10))
    for k, f in enumerate(frames):
        sensor = T0 + k * FRAME_NS + jitter[k % len(jitter)]
        assert f.sensor_ts_ns == sensor  # absolute, not relative to the first frame
        assert f.exposure_us == 12_000 and f.frame_duration_us == 33_333
        assert f.host_ts_ns == sensor - 12_000 * 1000 // 2
        assert f.dropped_before == 0
    assert pc._fake_encoder.firsttimestamp == T0 // 1000  # the encoder's own is relative
    cam.stop()


def test_lost_frames_show_as_index_jumps_and_dropped_before():
    cam, pc = started()
    pc._fake_frames(20, camera_drops={3, 4}, encoder_skips={10})
    frames = cam.poll()
    idx = [f.index for f in frames]
    assert idx == [k for k in range(20) if k not in (3, 4, 10)]
    by = {f.index: f for f in frames}
    assert by[5].dropped_before == 2 and by[11].dropped_before == 1
    assert sum(f.dropped_before for f in frames) == 3 == cam.stats()["frames_dropped"]
    cam.stop()


def test_keyframes_carry_parameter_sets_and_request_keyframe_forces_one():
    cam, pc = started()
    pc._fake_frames(20)
    frames = cam.poll()
    keys = [f.index for f in frames if f.keyframe]
    assert keys == [0, 15]  # iperiod = keyframe_seconds * fps
    for f in frames:
        assert types(f.data)[:3] == ([7, 8, 5] if f.keyframe else [1])
    cam.request_keyframe()
    pc._fake_frames(2)
    later = cam.poll()
    assert [f.keyframe for f in later] == [True, False]
    assert types(later[0].data)[:3] == [7, 8, 5]
    cam.stop()


def test_ring_overflow_is_counted_and_forces_an_idr():
    # a 300-byte ring holds a handful of the fake's small frames
    cam, pc = started(dataclasses.replace(CFG, keyframe_seconds=60.0, ring_bytes=300))
    pc._fake_frames(12)
    first = cam.poll()
    lost = cam.frames.ring.dropped_records
    assert 0 < len(first) < 12 and len(first) + lost == 12
    pc._fake_frames(3)
    after = cam.poll()
    assert after[0].dropped_before == lost and after[0].keyframe
    assert types(after[0].data)[:3] == [7, 8, 5]
    assert after[0].index == first[-1].index + 1 + lost
    assert [f.keyframe for f in after] == [True, False, False]
    assert cam.stats()["frames_dropped"] == lost
    cam.stop()


def test_missing_metadata_falls_back_without_losing_absolute_time():
    cam, pc = started(jitter_ns=(700,))
    pc._fake_frames(2)
    pc.post_callback = None  # something else took the callback: no metadata is seen
    pc._fake_frames(2)
    pc._fake_frames(1, no_metadata=set())
    frames = cam.poll()
    assert len(frames) == 5
    for k, f in enumerate(frames):
        exact = T0 + k * FRAME_NS + 700
        assert abs(f.sensor_ts_ns - exact) < 1000  # µs resolution without the metadata
    assert cam.stats()["metadata_misses"] == 3
    cam.stop()


def test_exposure_defaults_when_the_sensor_does_not_report_it():
    cam, pc = started()
    pc._fake_frames(3, no_metadata={1})
    f = cam.poll()[1]
    assert f.exposure_us == CFG.exposure_us
    assert f.host_ts_ns == f.sensor_ts_ns - CFG.exposure_us * 1000 // 2
    cam.stop()


def test_frames_from_another_thread_wake_the_consumer():
    cam, pc = started()
    assert not cam.wait(0.01)
    t = threading.Thread(target=pc._fake_frames, args=(30,))
    t.start()
    got: list[Any] = []
    while len(got) < 30:
        assert cam.wait(5.0)
        got += cam.poll()
    t.join()
    assert [f.index for f in got] == list(range(30))
    cam.stop()


def test_stop_closes_and_errors_are_source_errors():
    cam, pc = started()
    cam.stop()
    assert pc._fake_closed and not pc._fake_recording and not cam.stats()["running"]
    cam.stop()  # twice is harmless
    with pytest.raises(SourceError, match="camera1") as ei:
        PiCamera(CFG, api=fake.make_api(cameras=1), camera_num=1).start()
    assert ei.value.device == "camera1"


def test_parameter_sets_are_put_in_front_of_a_bare_idr():
    ps = ParameterSets()
    bare = fake.frame_bytes(30, True, headers=False)
    assert ps.ensure(bare) == bare  # nothing learned yet: left as it is
    ps.ensure(fake.frame_bytes(0, True, headers=True))
    fixed = ps.ensure(bare)
    assert types(fixed) == [7, 8, 5] and fixed.endswith(bare) and ps.added == 1


def test_the_package_imports_without_picamera2_and_open_camera_is_lazy():
    code = ("import sys, agent.camera.pi, agent.camera.open as o, agent.config as c;"
            "cam = o.open_camera(c.CameraSection(backend='picamera2'));"
            "print(type(cam).__name__, 'picamera2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["PiCamera", "False"]
    assert isinstance(open_camera(CFG), PiCamera)
    with pytest.raises(SourceError, match="no camera"):
        open_camera(dataclasses.replace(CFG, backend="none"))


def test_off_a_pi_loading_picamera2_is_a_source_error():
    try:
        import libcamera  # noqa: F401
        pytest.skip(NOT_APPLICABLE + "libcamera is importable here: this is a Pi")
    except ImportError:
        pass
    with pytest.raises(SourceError, match="picamera2") as ei:
        load_api()
    assert "python3-picamera2" in str(ei.value)


# --------------------------------------------------------------------------- canary


def real_source() -> Path:
    spec = importlib.util.find_spec("picamera2")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the real picamera2 source is not installed, so the fake cannot be "
                    "checked against it: run ./install.sh --dev "
                    "(pip install --no-deps picamera2)")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclasses.dataclass
class ClassInfo:
    methods: dict[str, ast.FunctionDef]
    attrs: set[str]
    bases: list[str]


def index_classes(files: list[Path]) -> dict[str, ClassInfo]:
    out: dict[str, ClassInfo] = {}
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            info = ClassInfo({}, set(), [])
            for b in node.bases:
                info.bases.append(b.attr if isinstance(b, ast.Attribute)
                                  else getattr(b, "id", ""))
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    info.methods.setdefault(item.name, item)  # a property's getter first
                elif isinstance(item, ast.Assign):
                    info.attrs |= {t.id for t in item.targets if isinstance(t, ast.Name)}
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    info.attrs.add(item.target.id)
            for sub in ast.walk(node):
                targets = []
                if isinstance(sub, ast.Assign):
                    targets = sub.targets
                elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                    targets = [sub.target]
                for t in targets:
                    if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                            and t.value.id == "self"):
                        info.attrs.add(t.attr)
            out.setdefault(node.name, info)
    return out


def resolve(classes: dict[str, ClassInfo], name: str) -> ClassInfo:
    """A class with everything it inherits from classes in the same source."""
    info = classes[name]
    merged = ClassInfo(dict(info.methods), set(info.attrs), list(info.bases))
    for base in info.bases:
        if base in classes and base != name:
            parent = resolve(classes, base)
            for k, v in parent.methods.items():
                merged.methods.setdefault(k, v)
            merged.attrs |= parent.attrs
    return merged


def params(fn: ast.FunctionDef) -> tuple[list[str], set[str], set[str], bool]:
    """(positional names without self, keyword-only names, names with defaults, takes *)."""
    a = fn.args
    pos = [p.arg for p in a.posonlyargs + a.args][1:]
    kwonly = {p.arg for p in a.kwonlyargs}
    with_default = set(pos[len(pos) - len(a.defaults):]) if a.defaults else set()
    with_default |= {p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                     if d is not None}
    return pos, kwonly, with_default, a.vararg is not None or a.kwarg is not None


def compatible(fake_fn: ast.FunctionDef, real_fn: ast.FunctionDef) -> list[str]:
    problems = []
    f_pos, f_kw, f_def, _ = params(fake_fn)
    r_pos, r_kw, r_def, r_star = params(real_fn)
    for i, name in enumerate(f_pos):
        if i >= len(r_pos) or r_pos[i] != name:
            problems.append(f"positional parameter {i} is {name!r} in the fake, "
                            f"{r_pos[i] if i < len(r_pos) else None!r} in picamera2")
    for name in f_kw:
        if name not in r_pos and name not in r_kw and not r_star:
            problems.append(f"keyword {name!r} does not exist in picamera2")
    for name in f_def:
        if name in r_pos + list(r_kw) and name not in r_def:
            problems.append(f"{name!r} is optional in the fake but required in picamera2")
    for name in r_pos + list(r_kw):
        if name not in r_def and name not in f_pos and name not in f_kw:
            problems.append(f"picamera2 requires {name!r}, which the fake does not take")
    return problems


FAKE_CLASSES = {
    # fake class -> (module of the real one, check its constructor?)
    "Picamera2": ("picamera2.py", True),
    "H264Encoder": ("encoders/h264_encoder.py", True),
    "LibavH264Encoder": ("encoders/libav_h264_encoder.py", True),
    "Output": ("outputs/output.py", True),
    "CompletedRequest": ("request.py", False),  # only picamera2 builds requests
}


def test_canary_fake_classes_methods_and_parameters_exist_in_picamera2():
    pkg = real_source()
    real = index_classes(sorted(pkg.rglob("*.py")))
    fakes = index_classes([FAKE_FILE])
    problems: list[str] = []
    for name, (module, check_init) in FAKE_CLASSES.items():
        module_classes = index_classes([pkg / module])
        assert name in module_classes, f"picamera2/{module} no longer defines {name}"
        r = resolve(real, name)
        f = resolve(fakes, name)
        public = {m for m in f.methods if not m.startswith("_")}
        if check_init:
            public.add("__init__")
        for m in sorted(public):
            if m not in r.methods:
                problems.append(f"{name}.{m}: no such method in picamera2")
                continue
            problems += [f"{name}.{m}: {p}" for p in compatible(f.methods[m], r.methods[m])]
        for attr in sorted(a for a in f.attrs if not a.startswith("_")):
            if attr not in r.attrs and attr not in r.methods:
                problems.append(f"{name}.{attr}: no such attribute in picamera2")
    assert not problems, "the fake drifted from picamera2:\n" + "\n".join(problems)


def test_canary_import_locations_the_adapter_uses():
    pkg = real_source()

    def exported(init: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.ImportFrom):
                names |= {a.asname or a.name for a in node.names}
        return names

    assert "Picamera2" in exported(pkg / "__init__.py")
    assert {"H264Encoder", "LibavH264Encoder"} <= exported(pkg / "encoders" / "__init__.py")
    assert "Output" in exported(pkg / "outputs" / "__init__.py")


def test_canary_metadata_and_control_names():
    pkg = real_source()
    text = "\n".join(p.read_text() for p in pkg.rglob("*.py"))
    for name in ("SensorTimestamp", "ExposureTime", "FrameDuration", "FrameDurationLimits",
                 "post_callback", "firsttimestamp"):
        assert name in text, f"picamera2 no longer mentions {name}"
    # outputframe is called positionally with (frame, keyframe, timestamp, packet, audio)
    enc = (pkg / "encoders" / "encoder.py").read_text()
    assert "out.outputframe(frame, keyframe, timestamp, packet, audio)" in enc
    # the encoder's timestamp is relative to firsttimestamp, in µs from SensorTimestamp
    assert "SensorTimestamp] / 1000" in enc and "ts - self.firsttimestamp" in enc


def test_canary_catches_a_drifted_fake():
    """The checker itself: a fake with a wrong parameter is reported."""
    bad = ast.parse("class Output:\n    def outputframe(self, data, keyframe=True): pass\n")
    good = ast.parse("class Output:\n"
                     "    def outputframe(self, frame, keyframe=True, timestamp=None,"
                     " packet=None, audio=False): pass\n")
    cls_bad, cls_good = bad.body[0], good.body[0]
    assert isinstance(cls_bad, ast.ClassDef) and isinstance(cls_good, ast.ClassDef)
    fn_bad, fn_good = cls_bad.body[0], cls_good.body[0]
    assert isinstance(fn_bad, ast.FunctionDef) and isinstance(fn_good, ast.FunctionDef)
    assert compatible(fn_bad, fn_good)
    assert not compatible(fn_good, fn_good)
