#!/usr/bin/env bash
# Screenshot of the demo case's HTML report for the README: docs/demo-report.png.
# Runs `cloudir demo` (local AWS emulator, no account, no network) into a temporary
# case, writes its report, and loads it in headless Chromium from a file:// URL.
#
#   scripts/screenshot_report.sh [OUTPUT.png]      (default docs/demo-report.png)
#
# Needs chromium (Debian: apt-get install --no-install-recommends chromium) and .venv
# (make venv). WIDTH and HEIGHT set the window size (default 1280x1800).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/docs/demo-report.png}
width=${WIDTH:-1280}
height=${HEIGHT:-1800}

cloudir=$repo/.venv/bin/cloudir
[ -x "$cloudir" ] || cloudir=$(command -v cloudir) || {
  echo "error: no .venv/bin/cloudir and no cloudir on PATH; run make venv" >&2
  exit 2
}
browser=$(command -v chromium || command -v chromium-browser) || {
  echo "error: no chromium on PATH; apt-get install --no-install-recommends chromium" >&2
  exit 2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/cloudir-screenshot.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$cloudir" demo --case "$work/demo-case" --force >"$work/demo.log" 2>&1 || {
  tail -n 20 "$work/demo.log" >&2
  echo "error: cloudir demo failed" >&2
  exit 1
}
"$cloudir" report --case "$work/demo-case" --format html >/dev/null

mkdir -p "$(dirname "$out")"
# A fresh profile, no background services, and a resolver that maps every name to
# nothing: the screenshot shows the report as it renders offline.
"$browser" --headless --no-sandbox --disable-gpu --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --disable-extensions --hide-scrollbars --host-resolver-rules='MAP * ~NOTFOUND' \
  --user-data-dir="$work/profile" --window-size="$width,$height" \
  --screenshot="$out" "file://$work/demo-case/report/report.html" >"$work/browser.log" 2>&1 || {
  tail -n 20 "$work/browser.log" >&2
  echo "error: chromium could not take the screenshot" >&2
  exit 1
}
[ -s "$out" ] || { echo "error: no screenshot written to $out" >&2; exit 1; }
echo "$out ($(wc -c <"$out") bytes)"
