#!/usr/bin/env bash
# Makes sure the mosquitto broker and what builds warden's broker guard plugin are installed:
# mosquitto, its plugin headers (mosquitto-dev, libmosquitto-dev) and a C compiler. Idempotent.
# Installs the Debian packages with apt-get when root, with sudo otherwise,
# and otherwise says exactly what to install.
set -euo pipefail
find_mosquitto() {
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}
PACKAGES="mosquitto mosquitto-dev libmosquitto-dev gcc"
have_all() {
  [ -n "$(find_mosquitto)" ] && [ -f /usr/include/mosquitto_broker.h ] && [ -f /usr/include/mosquitto.h ] \
    && command -v cc >/dev/null
}
have_all && exit 0
echo "installing the Debian packages $PACKAGES (the broker and what builds its warden plugin; about a minute)..." >&2
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq $PACKAGES >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo apt-get install -y -qq $PACKAGES >/dev/null
else
  echo "error: mosquitto (>= 2.0), its plugin headers and a C compiler are required and could not be installed automatically." >&2
  echo "       Install them with:  sudo apt-get install $PACKAGES" >&2
  exit 1
fi
# The Debian package starts a system-wide broker on port 1883; Warden never uses it
# (each broker it runs has its own config on a loopback port), so leave it alone.
have_all || { echo "error: the install did not provide mosquitto, its plugin headers and cc" >&2; exit 1; }
