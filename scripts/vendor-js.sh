#!/usr/bin/env bash
# vendor-js.sh - copy the front-end libraries from npm into static/vendor/ (no bundler).
#
#   @novnc/novnc      -> static/vendor/novnc/   (core/ ES modules + vendor/pako/lib, LICENSE)
#   @xterm/xterm      -> static/vendor/xterm/   (xterm.mjs, xterm.css, LICENSE)
#   @xterm/addon-fit  -> static/vendor/xterm/   (addon-fit.mjs, LICENSE.addon-fit)
#   tus-js-client     -> static/vendor/tus/     (dist/tus.min.js, the browser bundle; LICENSE)
#   uplot             -> static/vendor/uplot/   (dist/uPlot.iife.min.js, dist/uPlot.min.css, LICENSE: the charts)
#
# Only the files the pages load are copied (no docs, tests, source maps or CommonJS builds), and
# the `//# sourceMappingURL=` lines are dropped so a manifest static storage finds every reference.
# Idempotent: when static/vendor/VERSIONS already records the pinned versions it does nothing,
# so a set-up without network access still works once the files are there.
#
# Usage: scripts/vendor-js.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

NOVNC_VERSION=1.7.0
XTERM_VERSION=6.0.0
FIT_VERSION=0.11.0
TUS_VERSION=4.3.1
UPLOT_VERSION=1.6.32
DEST=static/vendor
STAMP="$DEST/VERSIONS"
WANT="@novnc/novnc@$NOVNC_VERSION @xterm/xterm@$XTERM_VERSION @xterm/addon-fit@$FIT_VERSION tus-js-client@$TUS_VERSION uplot@$UPLOT_VERSION"

if [ "${1:-}" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
   && [ -f "$DEST/novnc/core/rfb.js" ] && [ -f "$DEST/xterm/xterm.mjs" ] && [ -f "$DEST/xterm/addon-fit.mjs" ] \
   && [ -f "$DEST/tus/tus.min.js" ] && [ -f "$DEST/uplot/uPlot.iife.min.js" ]; then
  echo "vendored JS up to date ($WANT)"
  exit 0
fi

command -v npm >/dev/null || { echo "npm is required to vendor noVNC, xterm.js, tus-js-client and uPlot (apt-get install npm)" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm install --silent --no-audit --no-fund --ignore-scripts --no-package-lock \
   "@novnc/novnc@$NOVNC_VERSION" "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$FIT_VERSION" \
   "tus-js-client@$TUS_VERSION" "uplot@$UPLOT_VERSION" >/dev/null)
NM="$TMP/node_modules"

strip_maps() { sed -i '/^\/\/# sourceMappingURL=/d' "$@"; }

# Build into a staging directory and swap it in, so an interrupted run never leaves half a tree.
STAGE="$TMP/stage"
mkdir -p "$STAGE/novnc/vendor/pako" "$STAGE/xterm" "$STAGE/tus" "$STAGE/uplot"
cp -R "$NM/@novnc/novnc/core" "$STAGE/novnc/core"
cp -R "$NM/@novnc/novnc/vendor/pako/lib" "$STAGE/novnc/vendor/pako/lib"
cp "$NM/@novnc/novnc/vendor/pako/LICENSE" "$STAGE/novnc/vendor/pako/LICENSE"
cp "$NM/@novnc/novnc/LICENSE.txt" "$STAGE/novnc/LICENSE.txt"
cp "$NM/@xterm/xterm/lib/xterm.mjs" "$STAGE/xterm/xterm.mjs"
cp "$NM/@xterm/xterm/css/xterm.css" "$STAGE/xterm/xterm.css"
cp "$NM/@xterm/xterm/LICENSE" "$STAGE/xterm/LICENSE"
cp "$NM/@xterm/addon-fit/lib/addon-fit.mjs" "$STAGE/xterm/addon-fit.mjs"
cp "$NM/@xterm/addon-fit/LICENSE" "$STAGE/xterm/LICENSE.addon-fit"
cp "$NM/tus-js-client/dist/tus.min.js" "$STAGE/tus/tus.min.js"
cp "$NM/tus-js-client/LICENSE" "$STAGE/tus/LICENSE"
cp "$NM/uplot/dist/uPlot.iife.min.js" "$STAGE/uplot/uPlot.iife.min.js"
cp "$NM/uplot/dist/uPlot.min.css" "$STAGE/uplot/uPlot.min.css"
cp "$NM/uplot/LICENSE" "$STAGE/uplot/LICENSE"
find "$STAGE" -name '*.js' -o -name '*.mjs' | while read -r f; do strip_maps "$f"; done
find "$STAGE" -type f -exec chmod 0644 {} +

mkdir -p "$DEST"
rm -rf "$DEST/novnc" "$DEST/xterm" "$DEST/tus" "$DEST/uplot"
mv "$STAGE/novnc" "$DEST/novnc"
mv "$STAGE/xterm" "$DEST/xterm"
mv "$STAGE/tus" "$DEST/tus"
mv "$STAGE/uplot" "$DEST/uplot"
echo "$WANT" >"$STAMP"
echo "vendored $WANT into $DEST ($(du -sh "$DEST" | cut -f1))"
