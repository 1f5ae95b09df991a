#!/usr/bin/env bash
# Installs the build into a scratch root and builds a consumer with CMake from the installed
# package config alone (find_package(parjob CONFIG REQUIRED), parjob::parjob and
# parjob::parjob_static), then runs both programs.
# Usage: cmake-consumer.sh <build dir> <source dir> <install prefix> <version>
set -euo pipefail
build=$1
src=$2
prefix=$3
version=$4
command -v cmake >/dev/null || { echo "SKIP: cmake is not installed (scripts/test installs it)"; exit 77; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
DESTDIR=$root meson install -C "$build" --no-rebuild --quiet >/dev/null
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src/tests/cmake-consumer" -B "$root/consumer" "${generator[@]}" \
    -DCMAKE_PREFIX_PATH="$root$prefix" -DPARJOB_VERSION="$version" \
    -DCONSUMER_SOURCE="$src/tests/pkgconfig_consumer.c" >"$root/cmake.log" 2>&1 ||
    { cat "$root/cmake.log" >&2; echo "cmake could not configure the consumer" >&2; exit 1; }
cmake --build "$root/consumer" >"$root/build.log" 2>&1 ||
    { cat "$root/build.log" >&2; echo "the consumer did not build" >&2; exit 1; }
# No LD_LIBRARY_PATH: CMake gives the program the run path of the library it found.
out=$("$root/consumer/consumer")
[ "$out" = "5" ] || { echo "consumer printed '$out', expected 5" >&2; exit 1; }
out=$("$root/consumer/consumer_static")
[ "$out" = "5" ] || { echo "static consumer printed '$out', expected 5" >&2; exit 1; }
echo "cmake consumer: ok"
