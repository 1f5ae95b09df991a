#!/usr/bin/env bash
# Builds a meson project that has this source tree as subprojects/parjob and takes it with
# dependency('parjob'), then runs its program.  parjob's own tests, examples, benchmarks and
# reference are not built for a parent project, and an -O0 build keeps this to seconds.
# Usage: meson-consumer.sh <source dir>
set -euo pipefail
src=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/consumer/subprojects"
cp "$src/tests/meson-consumer/meson.build" "$root/consumer/"
cp "$src/tests/pkgconfig_consumer.c" "$root/consumer/consumer.c"
ln -s "$src" "$root/consumer/subprojects/parjob"
# --force-fallback-for: the subproject even where a parjob is installed on the machine.
meson setup "$root/build" "$root/consumer" --buildtype=debug --force-fallback-for=parjob \
    >"$root/setup.log" 2>&1 ||
    { cat "$root/setup.log" >&2; echo "meson could not configure the consumer" >&2; exit 1; }
ninja -C "$root/build" consumer >"$root/build.log" 2>&1 ||
    { cat "$root/build.log" >&2; echo "the consumer did not build" >&2; exit 1; }
if ninja -C "$root/build" -t targets all | grep -qE "^subprojects/parjob/(tests|examples|bench|docs)/"; then
    echo "parjob as a subproject builds its own tests, examples or benchmarks" >&2
    exit 1
fi
out=$("$root/build/consumer")
[ "$out" = "5" ] || { echo "consumer printed '$out', expected 5" >&2; exit 1; }
echo "meson subproject consumer: ok"
