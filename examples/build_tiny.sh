#!/usr/bin/env bash
# Build examples/tiny_model.c against BUILD/libsd.a (the flags of the Makefile).
# usage: examples/build_tiny.sh BUILD OUT
set -eu
build=$1 out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
pk=$(sed -n 's/^PKGS *:= *//p' "$root/Makefile")
extra=$(sed -n 's/^PKG_LIBS *:= *\$(shell.*) *\(-l.*\)$/\1/p' "$root/Makefile")
san=
case "$build" in */san|*/san/) san="-fsanitize=address,undefined -fno-omit-frame-pointer" ;; esac
cc -std=c11 -D_GNU_SOURCE -O1 -fopenmp $san -I"$root/lib" $(pkg-config --cflags $pk) -I/usr/include/stb \
  "$root/examples/tiny_model.c" -o "$out" "$build/libsd.a" $(pkg-config --libs $pk) $extra -lpthread
