#!/usr/bin/env bash
# Reports every C++ source tracked by git that clang-format (with the committed
# .clang-format) would change, and exits non-zero if there is one. Changes nothing unless
# given --fix, which reformats those files in place.
# Usage: scripts/check-format.sh [--fix] [FILE...]   (default: every tracked source)
set -euo pipefail
cd "$(dirname "$0")/.."
fix=0
if [ "${1:-}" = --fix ]; then fix=1; shift; fi
if ! command -v clang-format >/dev/null; then
  echo "check-format: clang-format is not installed (apt-get install clang-format)" >&2
  exit 2
fi
if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h')
fi
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -eq 0 ]; then
  echo "check-format: ${#files[@]} files, all formatted ($(clang-format --version))"
  exit 0
fi
if [ $fix -eq 1 ]; then
  clang-format -i "${bad[@]}"
  echo "check-format: reformatted ${#bad[@]} of ${#files[@]} files"
  exit 0
fi
printf 'not formatted: %s\n' "${bad[@]}"
echo "check-format: ${#bad[@]} of ${#files[@]} files need clang-format (scripts/check-format.sh --fix)"
exit 1
