#!/usr/bin/env bash
# Makes sure Debian's chromium is installed: the dashboard's browser test drives it headless with
# Playwright (tests/integration/test_dashboard_browser.py), and never downloads a browser of its own.
# Installs it with apt-get when root, with sudo otherwise; where neither works (or on a system
# without apt-get), it says so and the test is skipped with that reason. Idempotent.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "warning: no apt-get here: the dashboard's browser test needs /usr/bin/chromium and is skipped" >&2
  exit 0
fi
echo "installing the Debian package chromium (the dashboard's browser test; about a minute)..." >&2
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null
else
  echo "warning: chromium could not be installed (sudo apt-get install chromium); the dashboard's browser test is skipped" >&2
  exit 0
fi
[ -x /usr/bin/chromium ] || { echo "error: the install did not provide /usr/bin/chromium" >&2; exit 1; }
