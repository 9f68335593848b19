#!/usr/bin/env bash
# Installs the system packages needed to *build* whepcast (idempotent).
#  - nasm: OpenH264's assembly (without it the C fallback encodes ~2.7x slower)
#  - libxcb*-dev: X11 screen capture (crate `scrap`)
#  - pkg-config, clang: asked for by some -sys crates
set -euo pipefail
pkgs=(nasm pkg-config libxcb1-dev libxcb-shm0-dev libxcb-randr0-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
