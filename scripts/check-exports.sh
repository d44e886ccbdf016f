#!/usr/bin/env bash
# Fails unless the shared library exports the public API only: every defined dynamic symbol
# must be in namespace zreap, and none in zreap::detail or the pimpl internals
# (zreap::loop::impl, zreap::child::state). The library is built with hidden visibility and
# exports what include/zreap/ marks ZREAP_API (docs/api.md, "ABI policy").
# Usage: scripts/check-exports.sh path/to/libzreap.so   (a meson test in every build)
set -euo pipefail
lib=$1
nm_prog=${NM:-nm}
symbols=$("$nm_prog" -D --defined-only --demangle "$lib" | awk '{ $1 = ""; $2 = ""; sub(/^  /, ""); print }')
count=$(printf '%s\n' "$symbols" | grep -c . || true)
bad=$(printf '%s\n' "$symbols" | grep -E 'detail|zreap::loop::impl|zreap::child::state' || true)
foreign=$(printf '%s\n' "$symbols" | grep -v -E '^zreap::' | grep . || true)
echo "$lib: $count exported symbols"
status=0
if [ -n "$bad" ]; then
  echo "internal symbols exported:" >&2
  printf '%s\n' "$bad" | sed 's/^/  /' >&2
  status=1
fi
if [ -n "$foreign" ]; then
  echo "symbols outside namespace zreap exported:" >&2
  printf '%s\n' "$foreign" | sed 's/^/  /' >&2
  status=1
fi
exit $status
