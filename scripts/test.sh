#!/usr/bin/env bash
# The one command that checks everything, on a fresh machine or in CI:
#   ./scripts/test.sh
# It installs what the tests need and is missing, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A clean clone gains nothing from incremental compilation (nothing to reuse) and its cache
# costs gigabytes of disk; a developer can still set CARGO_INCREMENTAL=1.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk free before building: $(df -h . | awk 'NR==2 {print $4}')"

# paho-mqtt (conformance tests) builds the Paho C library from source with cmake, with
# OpenSSL for its TLS columns.
if ! command -v cmake >/dev/null 2>&1 || ! dpkg -s libssl-dev >/dev/null 2>&1; then
  echo "== installing cmake and libssl-dev (to build the Paho C library for the conformance tests)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cmake libssl-dev pkg-config >/dev/null
fi

# The secure-listener test drives the binary with Mosquitto's own mosquitto_pub/mosquitto_sub.
if ! command -v mosquitto_pub >/dev/null 2>&1; then
  echo "== installing mosquitto-clients (mosquitto_pub/sub over TLS against Tern)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto-clients >/dev/null
fi

# The bridge test (tests/bridge_mosquitto.rs) runs a real Mosquitto bridged to Tern.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "== installing mosquitto (the bridge test bridges a real Mosquitto to Tern)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
  # The package may start a system Mosquitto on 1883, Tern's port: the test runs its own.
  $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || $sudo service mosquitto stop >/dev/null 2>&1 || true
fi

# The browser test (tests/browser.rs): MQTT.js in headless Chromium over WS and WSS, trusting
# the test CA through an NSS database (certutil).
if [ ! -x /usr/bin/chromium ] || ! command -v certutil >/dev/null 2>&1; then
  echo "== installing chromium, chromium-driver and libnss3-tools (the browser test)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver libnss3-tools >/dev/null
fi
if command -v npm >/dev/null 2>&1; then
  echo "== npm ci (MQTT.js and playwright-core for the browser test)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked

echo "== the explorer finds bugs planted in the broker (a test-only feature)"
cargo test -p tern-sim --features planted-bugs --test planted --locked
