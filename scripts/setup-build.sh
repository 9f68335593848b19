#!/usr/bin/env bash
# Installs the system packages needed to *build* whepcast (idempotent).
#  - nasm: OpenH264's assembly (without it the C fallback encodes ~2.7x slower)
#  - libxcb*-dev: X11 screen capture (crate `scrap`)
#  - pkg-config: asked for by some -sys crates
#  - make: builds jemalloc (the global allocator, crate tikv-jemallocator)
set -euo pipefail
cd "$(dirname "$0")"
bash apt-install.sh nasm pkg-config make libxcb1-dev libxcb-shm0-dev libxcb-randr0-dev
