#!/usr/bin/env bash
# Large data without /dev/shm (issue 13): test-shared's cases that place inputs, share
# allocations and map them in workers, run where /dev/shm is an empty read-only tmpfs of 4 KiB
# (a user and mount namespace of this test's own: nothing outside it changes).  parjob's
# shared memory is memfds, which need no file system: the cases pass as they do anywhere.
# Skips (77) where unprivileged user namespaces are not allowed.
# Usage: shared-no-devshm.sh BUILD_ROOT
set -euo pipefail
exe=$1/tests/test-shared
unshare -rm true 2>/dev/null || { echo "SKIP: no unprivileged user namespaces here"; exit 77; }
for case in shared_write read_only map_once futures; do
    unshare -rm sh -c 'mount -t tmpfs -o size=4k,ro none /dev/shm &&
                       [ -z "$(ls -A /dev/shm)" ] && CK_RUN_CASE=$1 "$2"' sh "$case" "$exe"
done
