#!/usr/bin/env bash
# Makes sure the 32-bit MicroPython unix port can run where one is present: the heap tests and
# `make bench` measure the device's heap on it as an ESP32 lays it out (4-byte pointers, 16-byte
# GC blocks). It is looked for in $MICROPYTHON32, then ../shared/tools/micropython32/micropython
# beside the checkout; with none, there is nothing to do (those tests say they were skipped).
# It needs the i386 C library (Debian: libc6-i386), installed here when root or with sudo.
# Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
port="${MICROPYTHON32:-$here/../shared/tools/micropython32/micropython}"
[ -x "$port" ] || exit 0
"$port" -c "pass" >/dev/null 2>&1 && exit 0
echo "installing the Debian package libc6-i386 (the 32-bit MicroPython port at $port needs it)..." >&2
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq libc6-i386 >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq libc6-i386 >/dev/null
else
  echo "warning: $port needs libc6-i386 (sudo apt-get install libc6-i386); the 32-bit heap checks are skipped" >&2
  exit 0
fi
"$port" -c "pass" >/dev/null 2>&1 || echo "warning: $port still does not run; the 32-bit heap checks are skipped" >&2
