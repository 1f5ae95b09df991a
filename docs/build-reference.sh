#!/usr/bin/env bash
# Builds the API reference from include/parjob.h: <outdir>/html and <outdir>/man3, the man pages
# being one page per header section (parjob_parallel.3, ...), the overview parjob.3, and a link
# page per public name (pj_run.3 -> parjob_parallel.3).  Doxygen's warnings go to
# <outdir>/doxygen-warnings.log.
# Usage: build-reference.sh <doxygen> <Doxyfile> <outdir>
set -euo pipefail
doxygen=$1
doxyfile=$2
out=$3
rm -rf "$out/html" "$out/man3"
mkdir -p "$out"
{ cat "$doxyfile"; echo "OUTPUT_DIRECTORY = $out"; echo "WARN_LOGFILE = $out/doxygen-warnings.log"; } |
    "$doxygen" -
# Doxygen writes a link page for every member, struct fields included (index.3, open.3, ...):
# keep parjob's own names only, so that installing the pages shadows no other man page.
find "$out/man3" -type f ! -name 'pj_*' ! -name 'PJ_*' ! -name 'parjob*' -delete
# The filter (doxygen-filter.py) marked the comments' double quotes, which doxygen's man output
# would print as single quotes: put them back, as troff's \(dq and as HTML's &quot;.
quote=$'\xee\x80\x80'
find "$out/man3" -type f -exec sed -i "s/$quote/\\\\(dq/g" {} +
find "$out/html" -type f -name '*.html' -exec sed -i "s/$quote/\\&quot;/g" {} +
