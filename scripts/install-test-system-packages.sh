#!/usr/bin/env bash
# The system packages the napari tests need on a headless Debian/Ubuntu machine: a virtual display (Xvfb)
# and the X libraries Qt 6 loads. Installed only when missing, and only where we may (root with apt-get);
# elsewhere the napari tests skip with the reason.
set -u
if command -v xvfb-run >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libxcb-icccm.so.4; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no xvfb-run here (and not root with apt-get): the napari tests will be skipped" >&2
  exit 0
fi
packages="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
  libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 libxcb-shape0 libxcb-xkb1 libdbus-1-3
  libfontconfig1"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $packages >/dev/null; } \
  || echo "note: could not install Xvfb; the napari tests will be skipped" >&2
