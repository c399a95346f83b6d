#!/usr/bin/env bash
# Set up wearcap. Idempotent: run it again at any time.
#
#   ./install.sh          on a Raspberry Pi: system packages (incl. python3-picamera2), a venv
#                         that sees them, the service user, directories and systemd units.
#                         elsewhere: the dev setup (as --dev, but without the LeRobot
#                         environment, which only the export tests need: ~6 GB).
#   ./install.sh --dev    a venv in .venv with the dev extras, plus what the simulated rig and
#                         the tests need (dbus-daemon for the private BlueZ, ffmpeg's ffprobe,
#                         Node.js for the third-party tus server and Foxglove's MCAP reader,
#                         PostgreSQL for the collector's shared-store tests, systemd-analyze,
#                         Chromium for the dashboard test), and LeRobot's loader in
#                         .venv-lerobot (WEARCAP_SKIP_LEROBOT=1: not).
#   ./install.sh --pi     force the Pi setup.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

mode=auto
for arg in "$@"; do
  case "$arg" in
    --dev) mode=dev ;;
    --pi) mode=pi ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (use --dev or --pi)" >&2; exit 2 ;;
  esac
done
if [ "$mode" = auto ]; then
  if grep -qi 'raspberry pi' /proc/device-tree/model 2>/dev/null; then
    mode=pi
  else
    mode=dev
    # the main job on the simulated rig needs no LeRobot loader; `--dev` (the tests) builds it
    export WEARCAP_SKIP_LEROBOT="${WEARCAP_SKIP_LEROBOT:-1}"
  fi
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "install.sh: please install: ${missing[*]}" >&2; return 0
  fi
  say "apt: ${missing[*]}"
  sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

py=python3
if [ "$mode" = pi ]; then
  apt_install python3-venv python3-picamera2 python3-libcamera bluez dbus ffmpeg
  [ -d .venv ] || { say "venv (with system site packages, for picamera2)"; $py -m venv --system-site-packages .venv; }
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
  say "service user, directories, units"
  id wearcap >/dev/null 2>&1 || sudo_ useradd --system --home /var/lib/wearcap --shell /usr/sbin/nologin --groups video,dialout,bluetooth wearcap
  sudo_ install -d -o wearcap -g wearcap -m 0750 /var/lib/wearcap /var/lib/wearcap/spool
  sudo_ install -d -m 0755 /etc/wearcap
  sudo_ ln -sf "$here/.venv/bin/wearcap" /usr/local/bin/wearcap
  for unit in systemd/*.service systemd/*.timer; do
    sed "s#@PREFIX@#$here#g" "$unit" | sudo_ tee "/etc/systemd/system/$(basename "$unit")" >/dev/null
  done
  sudo_ systemctl daemon-reload
  sudo_ systemctl enable wearcap-capture.service wearcap-sync.service \
    wearcap-capture-resume.timer >/dev/null
  say "done. Next: wearcap provision, then wearcap selftest"
else
  # postgresql: the collector's shared-store tests start a private server (tests/pg.py)
  # haproxy: the balancer of the collector's reference deployment (deploy/fleet.py)
  apt_install python3-venv dbus ffmpeg postgresql libpq5 haproxy
  command -v npm >/dev/null || apt_install nodejs npm
  # systemd-analyze: the tests verify the units and hold their security exposure to budget.
  command -v systemd-analyze >/dev/null || apt_install systemd
  # A real headless browser for the fleet dashboard's test.
  command -v chromium >/dev/null || apt_install chromium
  [ -d .venv ] || { say "venv in .venv"; $py -m venv .venv; }
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  # picamera2's source only (it cannot import off a Pi): the canary in tests/test_camera_pi.py
  # checks the picamera2 fake against it.
  .venv/bin/pip install -q --no-deps picamera2
  if [ -f tests/interop/package.json ] && command -v npm >/dev/null; then
    say "third-party tus server for the interop tests"
    (cd tests/interop && npm install --silent --no-audit --no-fund >/dev/null)
  fi
  if [ -f tests/mcapjs/package.json ] && command -v npm >/dev/null; then
    say "Foxglove's MCAP reader and protobufjs, to read exports back in the tests"
    (cd tests/mcapjs && npm install --silent --no-audit --no-fund >/dev/null)
  fi
  # LeRobot's own dataset loader, in an environment of its own (it imports torch and
  # torchvision without declaring them, and pins av<16): the tests open every LeRobot export
  # with it. torch/torchvision are the CUDA builds PyPI serves for x86_64 (~6 GB with
  # lerobot-dataset); torchcodec is the video decoder LeRobot uses.
  if [ "${WEARCAP_SKIP_LEROBOT:-}" != 1 ]; then
    [ -x .venv-lerobot/bin/python ] || { say "LeRobot environment in .venv-lerobot (large: torch)"; $py -m venv .venv-lerobot; }
    if ! .venv-lerobot/bin/python -c "import ledataset, torch, torchvision, torchcodec" 2>/dev/null; then
      say "lerobot-dataset 0.4.4 with torch, torchvision and torchcodec into .venv-lerobot"
      .venv-lerobot/bin/pip install -q --upgrade pip
      .venv-lerobot/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" "torchcodec==0.16.0" "lerobot-dataset==0.4.4"
    fi
  fi
  say "done. Record on the simulated rig: .venv/bin/wearcap run --duration 30"
fi
