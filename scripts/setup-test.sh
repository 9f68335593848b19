#!/usr/bin/env bash
# Installs what the tests need beyond the build (idempotent):
#  - chromium: the real browser the viewer-page tests drive (Debian's, decodes H.264)
#  - ffmpeg: ffprobe reads back what `whepcast encode` writes
#  - xvfb + x11-xserver-utils: a real X server (and xsetroot) for the screen-capture tests
#  - iproute2 + util-linux: `ip` and `unshare` for the loopback-only network namespace
#  - iptables: the DNAT rule that stands in for a 1:1 NAT in the --public-ip test
#  - coturn: a real TURN server on loopback for the relay (TURN) browser test and TTFF bench
#  - janus: Janus 1.1, a real third-party WebRTC server (VideoRoom) that the WHIP publisher tests
#    publish into and Chromium watches the stream through (tests/browser/janus.mjs)
#  - simple-whip-server: Meetecho's WHIP front for Janus. Its Debian package cannot be installed
#    beside NodeSource's node (its dependency node-websocket needs Debian's libnode108, which
#    conflicts with it), so its .deb is unpacked under /opt and run with this node
#  - Node packages for the browser tests (playwright-core drives Chromium; pngjs reads screenshots;
#    whip-whep is a third-party WHEP client the interop test plays the stream with; express, cors,
#    websocket, async, colors and debug are simple-whip-server's modules)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-build.sh
bash scripts/apt-install.sh chromium ffmpeg xvfb x11-xserver-utils iproute2 util-linux coturn iptables janus
SWS=/opt/simple-whip-server
if [ ! -f "$SWS/usr/share/simple-whip-server/src/server.js" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  deb=$(mktemp -d)
  # As root, apt downloads as its _apt user: let that user write there.
  if [ -z "$SUDO" ]; then chmod 755 "$deb"; chown _apt "$deb" 2>/dev/null || true; fi
  (cd "$deb" && apt-get download -qq simple-whip-server)
  $SUDO dpkg -x "$deb"/simple-whip-server_*.deb "$SWS"
  rm -rf "$deb"
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
