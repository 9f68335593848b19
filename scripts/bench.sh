#!/usr/bin/env bash
# Runs the benchmarks on a release build, inside a loopback-only network namespace, side by
# side with the GStreamer reference broadcaster when ../shared/peers is present.
#   scripts/bench.sh [encoder|fanout|ttff|capture|churn|crowd|shaped|renditions|chain|relay|all] [args...]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}; shift || true
bash scripts/setup-test.sh
[ -x ../shared/peers/setup-gst.sh ] && { bash ../shared/peers/setup-gst.sh || echo "GStreamer reference unavailable" >&2; }
cargo build --release --locked
cargo bench --locked --no-run
# Waits for X display :$1 to accept connections (its socket appears).
wait_x() { for _ in $(seq 100); do [ -S /tmp/.X11-unix/X$1 ] && return 0; sleep 0.05; done; echo "Xvfb :$1 did not start" >&2; return 1; }
netns() { if [ "$(id -u)" -eq 0 ]; then unshare -n sh -c "ip link set lo up && $*"; else sh -c "$*"; fi; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
case $what in
  encoder)
    # One X screen per size, for the "desktop on screen" rows (captured by the screen source).
    Xvfb :98 -screen 0 1280x720x24 -screen 1 1920x1080x24 -nolisten tcp -noreset >/dev/null 2>&1 & xvfb=$!
    wait_x 98
    DISPLAY=:98 cargo bench --locked --bench encoder
    kill $xvfb ;;
  fanout) netns "cargo bench --locked --offline --bench fanout -- $*" ;;
  ttff) netns "WHEPCAST_BIN=target/release/whepcast node benches/ttff.mjs $*" ;;
  renditions) netns "WHEPCAST_BIN=target/release/whepcast node benches/renditions.mjs $*" ;;
  # The WHIP hop: glass-to-glass latency publish -> relay -> Chromium against serve -> Chromium.
  chain) netns "WHEPCAST_BIN=target/release/whepcast node benches/chain.mjs $*" ;;
  # The relay's cost per viewer (serve --source whip fed by whepcast publish) against serving
  # with its own encoder, in the same run.
  relay)
    netns "FANOUT_ONLY_WHEPCAST=1 cargo bench --locked --offline --bench fanout -- ${1:-0,1,8} ${2:-10}"
    netns "FANOUT_ONLY_WHEPCAST=1 FANOUT_SOURCE=whip cargo bench --locked --offline --bench fanout -- ${1:-0,1,8} ${2:-10}" ;;
  churn) netns "cargo bench --locked --offline --bench churn -- $*" ;;
  crowd)
    # aiortc viewers one at a time and 40 joining 150 ms apart, whepcast and the reference
    # (benches/crowd.py --help for the options, e.g. --rounds 3, --server-log DIR).
    py=$(bash scripts/setup-bench-py.sh)
    netns "$py benches/crowd.py --whepcast-bin target/release/whepcast $*" ;;
  shaped)
    # One headless Chromium through a shaped link (scripts/shape.sh: server, router and viewer
    # namespaces, rate and loss on the router), per link, whepcast and with --ref the reference
    # (benches/shaped.mjs has the options, e.g. --quick, --links 1mbit:1,drop, --seconds 30).
    # Needs root: run as another user, the namespaces cannot be made.
    netns "WHEPCAST_BIN=target/release/whepcast node benches/shaped.mjs $*" ;;
  capture)
    # A 1920x1080 X display with a static plaid root (an idle desktop: capture costs the
    # same whatever is shown; encoding a still screen is cheap).
    Xvfb :97 -screen 0 1920x1080x24 -nolisten tcp -noreset >/dev/null 2>&1 & xvfb=$!
    wait_x 97
    DISPLAY=:97 xsetroot -mod 7 7 -fg '#336699' -bg '#ffcc00' 
    DISPLAY=:97 cargo bench --locked --bench capture
    netns "DISPLAY=:97 FANOUT_SOURCE=screen cargo bench --locked --offline --bench fanout -- 1 10"
    kill $xvfb ;;
  all)
    cargo bench --locked --bench encoder
    netns "cargo bench --locked --offline --bench fanout -- 0,1,8 10"
    netns "WHEPCAST_BIN=target/release/whepcast node benches/ttff.mjs 10"
    ;;
  *) echo "usage: scripts/bench.sh [encoder|fanout|ttff|capture|churn|crowd|shaped|renditions|chain|relay|all]" >&2; exit 2 ;;
esac
