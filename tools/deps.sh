#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the benchmarks need.
set -e
pkgs="build-essential pkg-config libopenblas-dev libarchive-dev libjq-dev libstb-dev libzstd-dev
      libwebp-dev libjpeg62-turbo-dev libarchive-tools zstd clang libclang-rt-14-dev python3-numpy"
# Optional: oracles used only to regenerate golden files (tests/golden/gen): python3-torch python3-pil python3-opencv
[ "$(id -u)" = 0 ] && SUDO= || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs
