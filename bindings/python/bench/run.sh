#!/usr/bin/env bash
# Builds a release wheel, installs it with the baselines, and runs the benchmark.
# Arguments go to bench.py: --quick (a tenth of the sizes, one sample), --untyped.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "maturin>=1.15,<2" pycrdt loro
rm -rf dist-release
maturin build -q --release -o dist-release
python3 -m pip install -q --force-reinstall --no-deps dist-release/tandem-*.whl
python3 bench/bench.py "$@"
