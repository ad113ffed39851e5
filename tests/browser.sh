#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (tests/test_web_ui.py).
# Playwright drives it through executable_path; Playwright's own browser download is never
# used. Installs only when /usr/bin/chromium is absent.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "browser: installing chromium"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  echo "browser: chromium did not install; the browser tests cannot run" >&2
  exit 1
fi
