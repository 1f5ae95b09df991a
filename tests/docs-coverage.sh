#!/usr/bin/env bash
# Builds the API reference from include/parjob.h (docs/Doxyfile.in, docs/build-reference.sh)
# into a scratch directory and fails when
#  - a public function (PJ_EXPORT) has no documentation: doxygen's own "is not documented";
#  - a public function or macro of the header has no man page that holds its documentation;
#  - the overview parjob(3) is missing, or a page is named outside parjob's names.
# Usage: docs-coverage.sh <source dir> <python> [header]   (header: a variant to check instead)
set -euo pipefail
src=$1
python=$2
header=${3:-$src/include/parjob.h}
doxygen=$(command -v doxygen) ||
    { echo "SKIP: doxygen is not installed (scripts/test installs it)"; exit 77; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sed -e "s|@VERSION@|test|; s|@OUTPUT@|$out|g; s|@SOURCE_ROOT@|$src|g; s|@PYTHON@|$python|" \
    -e "s|^INPUT .*|INPUT = $header|" "$src/docs/Doxyfile.in" >"$out/Doxyfile"
"$src/docs/build-reference.sh" "$doxygen" "$out/Doxyfile" "$out"
failed=0

undocumented=$(grep "(function) .* is not documented" "$out/doxygen-warnings.log" || true)
if [ -n "$undocumented" ]; then
    echo "public functions without documentation (a comment right above the declaration, or" \
         "above its run of declarations naming it):" >&2
    echo "$undocumented" >&2
    failed=1
fi

# Every exported function and public macro has NAME.3, which is (or .so-links to) a page that
# exists; for a function, one that documents it in a section of its own.
functions=$(grep -oE '^PJ_EXPORT [^(]*\bpj_[a-z0-9_]+\s*\(' "$header" |
            sed -E 's/.*\b(pj_[a-z0-9_]+)\s*\($/\1/')
# (PJ_EXPORT and PJ_PRINTF, the attribute macros, are left out of the reference on purpose.)
macros=$(grep -oE '^#define (pj_|PJ_)[A-Za-z0-9_]+' "$header" | sed 's/#define //' |
         grep -vE '^(PJ__|PJ_EXPORT$|PJ_PRINTF$)' | sort -u)
for name in $functions $macros; do
    page=$out/man3/$name.3
    if [ ! -f "$page" ]; then
        echo "no man page for $name" >&2
        failed=1
        continue
    fi
    target=$(sed -n 's/^\.so //p' "$page")
    [ -z "$target" ] || page=$out/$target
    if [ ! -f "$page" ]; then
        echo "man page $name.3 links to $target, which is missing" >&2
        failed=1
    elif [[ " $functions " == *" $name "* ]] && ! grep -qE "^\.SS .*\b$name \(" "$page"; then
        echo "man page $name.3 (${target:-itself}) does not document $name" >&2
        failed=1
    fi
done
count=$(echo $functions | wc -w)
[ "$count" -gt 50 ] || { echo "found only $count public functions in $header" >&2; failed=1; }

grep -q "^\.SH \"Detailed Description\"" "$out/man3/parjob.3" 2>/dev/null ||
    { echo "no overview page parjob(3)" >&2; failed=1; }
strays=$(cd "$out/man3" && ls | grep -vE '^(pj_|PJ_|parjob)' || true)
[ -z "$strays" ] || { echo "man pages outside parjob's names: $strays" >&2; failed=1; }
[ -f "$out/html/index.html" ] || { echo "no HTML reference" >&2; failed=1; }
[ $failed -eq 0 ] && echo "reference: $count functions, each documented on its man page"
exit $failed
