#!/bin/sh
# The one place the mpi tests meet mpirun: runs a test program as rank 0 of `mpirun -n 3`,
# ranks 1 and 2 becoming its MPI worker ranks (PARJOB_MPI=1).  PJ_MPI_BTL=tcp forces Open MPI's
# network path (--mca btl self,tcp); the default is shared memory (vader).  Exits 77 (meson:
# skipped) when this build has no libparjob-mpi.so or the machine no mpirun.
#   usage: mpi-run.sh MODULE PROGRAM [ARGS...]
module=$1
shift
[ -f "$module" ] && command -v mpirun >/dev/null 2>&1 || exit 77
# Root in containers; more ranks than cores; no cross-memory attach in containers.  A rank that
# dies must not make mpirun end the job: the run's error says so (orte_abort_on_non_zero_status).
# That also makes mpirun exit 0 whatever rank 0 returns: a test that passes its verdict as
# rank 0's exit status sets OMPI_MCA_orte_abort_on_non_zero_status=1 itself.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_orte_abort_on_non_zero_status=${OMPI_MCA_orte_abort_on_non_zero_status:-0}
# Check must not fork per test: a forked copy of an MPI process cannot use MPI.
export CK_FORK=no PARJOB_MPI=1 PARJOB_MPI_MODULE="$module"
if [ "${PJ_MPI_BTL:-}" = tcp ]; then
    export OMPI_MCA_btl=self,tcp
fi
# Open MPI leaves its own allocations at exit, many from components it has unloaded (no
# module for a suppression to name): in an ASan build LeakSanitizer would fail every mpi test
# on them.  Memory errors still fail; parjob's leaks are the fork and spawn suites' to find.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
# With orte_abort_on_non_zero_status=0 mpirun exits 0 whatever its ranks return: rank 0's own
# status (the test's verdict) is written to a file by a shell around it and is this script's.
# The other ranks exec the program itself (their supervisors must be the program).
status=$(mktemp)
trap 'rm -f "$status"' EXIT
export PJ_MPI_STATUS="$status"
mpirun -n "${PJ_MPI_RANKS:-3}" sh -c 'if [ "${OMPI_COMM_WORLD_RANK:-0}" = 0 ]; then
        "$@"; echo $? > "$PJ_MPI_STATUS"; else exec "$@"; fi' sh "$@"
rc=$?
[ "$rc" = 0 ] && rc=$(cat "$status") && [ -n "$rc" ] || rc=${rc:-1}
exit "$rc"
