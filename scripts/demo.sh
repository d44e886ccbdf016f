#!/usr/bin/env bash
# Installs what zreap needs (Debian 12), builds it and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
if [ -d build/meson-private ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
meson compile -C build examples/hello >/dev/null
./build/examples/hello
