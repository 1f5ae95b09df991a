#!/usr/bin/env bash
# Installs the build into a scratch root and builds a tiny consumer from the installed header
# and library found through pkg-config alone, then runs it.
# Usage: pkgconfig-consumer.sh <build dir> <source dir>
set -euo pipefail
build=$1
src=$2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
DESTDIR=$root meson install -C "$build" --no-rebuild --quiet >/dev/null
pc=$(find "$root" -name parjob.pc -print -quit)
[ -n "$pc" ] || { echo "parjob.pc was not installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$root
cc -std=c11 -Wall -Werror -o "$root/consumer" "$src/tests/pkgconfig_consumer.c" \
    $(pkg-config --cflags --libs parjob)
libdir=$(dirname "$(find "$root" -name 'libparjob.so' -print -quit)")
out=$(LD_LIBRARY_PATH=$libdir "$root/consumer")
[ "$out" = "5" ] || { echo "consumer printed '$out', expected 5" >&2; exit 1; }
# A static link works too, with the private libraries pkg-config lists.
cc -std=c11 -o "$root/consumer-static" "$src/tests/pkgconfig_consumer.c" \
    $(pkg-config --cflags parjob) "$libdir/libparjob.a" $(pkg-config --libs --static parjob)
[ "$("$root/consumer-static")" = "5" ] || { echo "static consumer failed" >&2; exit 1; }
echo "pkg-config consumer: ok"
