#!/usr/bin/env bash
# Runs the benchmarks on a release build, inside a loopback-only network namespace, side by
# side with the GStreamer reference broadcaster when ../shared/peers is present.
#   scripts/bench.sh [encoder|fanout|ttff|all] [args...]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}; shift || true
bash scripts/setup-test.sh
[ -x ../shared/peers/setup-gst.sh ] && { bash ../shared/peers/setup-gst.sh || echo "GStreamer reference unavailable" >&2; }
cargo build --release --locked
cargo bench --locked --no-run
netns() { if [ "$(id -u)" -eq 0 ]; then unshare -n sh -c "ip link set lo up && $*"; else sh -c "$*"; fi; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
case $what in
  encoder) cargo bench --locked --bench encoder ;;
  fanout) netns "cargo bench --locked --offline --bench fanout -- $*" ;;
  ttff) netns "WHEPCAST_BIN=target/release/whepcast node benches/ttff.mjs $*" ;;
  all)
    cargo bench --locked --bench encoder
    netns "cargo bench --locked --offline --bench fanout -- 0,1,8 10"
    netns "WHEPCAST_BIN=target/release/whepcast node benches/ttff.mjs 10"
    ;;
  *) echo "usage: scripts/bench.sh [encoder|fanout|ttff|all]" >&2; exit 2 ;;
esac
