#!/usr/bin/env bash
# Install annotomo as a user does (README, "Install"): a wheel built from this checkout, in a fresh virtual
# environment with only its declared dependencies (plus the CPU torch pin of requirements-ci.txt), then
# segment a simulated tomogram with the built-in model. That environment resolves zarr 3 (the main test
# environment has zarr 2, which copick needs), so the OME-Zarr tests run here a second time, against the
# installed wheel.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$repo/.venv/bin/python" -m build --wheel --outdir "$work/dist" "$repo" > "$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q -r "$repo/requirements-ci.txt" "$work"/dist/annotomo-*.whl pytest
cd "$work"
venv/bin/annotomo synth cell --shape 16 96 96 --seed 1 > /dev/null
venv/bin/annotomo segment cellular-v2 cell_tomo.mrc -o out --quiet
venv/bin/annotomo evaluate out/cell_tomo_labels.mrc cell_labels.mrc
venv/bin/python -c "import annotomo, zarr; print('wheel installed from', annotomo.__file__, '| zarr', zarr.__version__)"
venv/bin/pytest -q -p no:cacheprovider --rootdir "$repo" "$repo/tests/test_omezarr.py"
