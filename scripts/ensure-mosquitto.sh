#!/usr/bin/env bash
# Makes sure the mosquitto broker binary is installed. Idempotent.
# Installs the Debian package with apt-get when root, with sudo otherwise,
# and otherwise says exactly what to install.
set -euo pipefail
find_mosquitto() {
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}
[ -n "$(find_mosquitto)" ] && exit 0
echo "mosquitto not found: installing the Debian package 'mosquitto'..." >&2
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq mosquitto >/dev/null
else
  echo "error: mosquitto (>= 2.0) is required and could not be installed automatically." >&2
  echo "       Install it with:  sudo apt-get install mosquitto   (or brew install mosquitto)" >&2
  exit 1
fi
# The Debian package starts a system-wide broker on port 1883; Warden never uses it
# (each broker it runs has its own config on a loopback port), so leave it alone.
[ -n "$(find_mosquitto)" ] || { echo "error: mosquitto install did not provide a binary" >&2; exit 1; }
