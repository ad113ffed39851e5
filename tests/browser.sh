#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (tests/test_web_ui.py),
# with a small Chinese font so the widget's Chinese texts show in the screenshots, and an
# emoji font for the emoji picker's (without it the emoji show as empty boxes).
# Playwright drives it through executable_path; Playwright's own browser download is never
# used. Installs only what is absent.
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -d /usr/share/fonts/truetype/wqy ] || need+=(fonts-wqy-microhei)
[ -d /usr/share/fonts/truetype/noto ] || need+=(fonts-noto-color-emoji)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "browser: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  echo "browser: chromium did not install; the browser tests cannot run" >&2
  exit 1
fi
