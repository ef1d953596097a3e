#!/usr/bin/env bash
# Builds a release wheel, installs it with the baselines, and runs the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "maturin>=1.15,<2" pycrdt loro
rm -rf dist-release
maturin build -q --release -o dist-release
python3 -m pip install -q --force-reinstall dist-release/tandem-*.whl
python3 bench/bench.py
