#!/usr/bin/env bash
# Installs what the tests need beyond the build (idempotent):
#  - chromium: the real browser the viewer-page tests drive (Debian's, decodes H.264)
#  - ffmpeg: ffprobe reads back what `whepcast encode` writes
#  - xvfb + x11-xserver-utils: a real X server (and xsetroot) for the screen-capture tests
#  - iproute2 + util-linux: `ip` and `unshare` for the loopback-only network namespace
#  - iptables: the DNAT rule that stands in for a 1:1 NAT in the --public-ip test
#  - coturn: a real TURN server on loopback for the relay (TURN) browser test and TTFF bench
#  - Node packages for the browser tests (playwright-core drives Chromium; pngjs reads screenshots;
#    whip-whep is a third-party WHEP client the interop test plays the stream with)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-build.sh
bash scripts/apt-install.sh chromium ffmpeg xvfb x11-xserver-utils iproute2 util-linux coturn iptables
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
