#!/usr/bin/env bash
# Builds startup_probe.cpp every way a program may link parjob — the shared and the static
# library, PIE and non-PIE, with and without -Wl,--as-needed, and fully static — and checks
# that a "spawn" task sees the program's start-up as main does (startup.c says why each holds).
# Usage: startup-links.sh <build dir> <source dir>
set -euo pipefail
build=$1
src=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cxx=${CXX:-c++}
flags=(-I"$src/include" -I"$src/tests" $(pkg-config --cflags libffi))
lib=(-L"$build/tests" -lstartup-lib -Wl,-rpath,"$build/tests:$build/src")
shared=(-L"$build/src" -lparjob -lffi)
static=("$build/src/libparjob.a" -lffi -lpthread -ldl -lm)
failed=0
check() { # name, then the link command's arguments
    local name=$1
    shift
    "$cxx" "${flags[@]}" -o "$dir/$name" "$src/tests/startup_probe.cpp" "$@"
    local out
    out=$("$dir/$name") || true
    local main=${out%% *}
    if [ "spawn=${main#main=}" = "${out#* }" ]; then
        echo "$name: ok ($out)"
    else
        echo "$name: FAILED ($out)"
        failed=1
    fi
}
for pie in pie no-pie; do
    cflag=$([ $pie = pie ] && echo -fPIE || echo -fno-pie)
    for needed in as-needed no-as-needed; do
        check "shared-$pie-$needed" $cflag -$pie -Wl,--$needed "${lib[@]}" "${shared[@]}"
        check "static-$pie-$needed" $cflag -$pie -Wl,--$needed "${lib[@]}" "${static[@]}"
    done
done
# Fully static: libc.a's __libc_start_main wins over parjob's weak one, so libparjob's
# constructor serves — after those of the objects linked before libparjob.a, the program's.
${CC:-cc} -c -o "$dir/startup-lib.o" "$src/tests/startup-lib.c"
if "$cxx" -static -o /dev/null -x c++ - <<<'int main(){}' 2>/dev/null; then
    check fully-static -static "$dir/startup-lib.o" "${static[@]}" 2>/dev/null
fi
exit $failed
