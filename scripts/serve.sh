#!/usr/bin/env bash
# Sets up the build dependencies and serves the built-in test pattern.
# Extra arguments go to `whepcast serve` (e.g. --listen 0.0.0.0:8080 --size 1920x1080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-build.sh
exec cargo run --release --locked -- serve "$@"
