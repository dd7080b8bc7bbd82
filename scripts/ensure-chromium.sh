#!/usr/bin/env bash
# Make sure the browser tests have a Chromium: install Debian's when root, else say how to get one.
set -euo pipefail
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
  exit 0
fi
if [ -n "${CHROMIUM:-}" ]; then
  echo "CHROMIUM=$CHROMIUM is not an executable file." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Chromium is missing: installing Debian's chromium and chromium-driver." >&2
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
  exit 0
fi
cat >&2 <<MSG
The browser tests need Chromium, and there is none at /usr/bin/chromium.
  Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y chromium chromium-driver
  elsewhere:      install Chromium or Chrome and run  CHROMIUM=/path/to/chromium make browser-test
MSG
exit 1
