#!/usr/bin/env bash
# The one test command: install what the tests need, build, and run every test.
# Media tests run inside a private network namespace with only loopback, so Chromium and
# the WebRTC peers cannot wander onto other interfaces (and nothing leaves the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test.sh
cargo build --locked --all-targets
# Lint gate: no warning passes, and every unsafe block says why it is sound (Cargo.toml).
cargo clippy --locked --all-targets -- -D warnings
# Format gate: the code is as rustfmt writes it.
cargo fmt --all --check
cargo test --locked --no-run
export WHEPCAST_BIN="$PWD/target/debug/whepcast"
run_tests='cargo test --locked --offline && cd tests/browser && node --test'
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
  unshare -n sh -c "ip link set lo up && $run_tests"
else
  echo "warning: cannot create a network namespace (needs root); running on the host network" >&2
  sh -c "$run_tests"
fi
