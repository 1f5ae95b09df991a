#!/bin/sh
# The mpi backend without mpirun: mpi-singleton run alone must be refused with PJ_EBACKEND and
# a message that says to run under mpirun, as Open MPI's singleton (orted on PATH) and without
# orted on PATH, where Open MPI's MPI_Init would abort the program instead.  77 (skipped)
# without the module or Open MPI's orted.
#   usage: test-mpi-singleton.sh MODULE PROGRAM
module=$1 program=$2
[ -f "$module" ] && command -v orted >/dev/null 2>&1 || exit 77
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PARJOB_MPI_MODULE="$module"
# What Open MPI keeps past MPI_Finalize is no leak of parjob's (an ASan build would report it).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
unset OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_RANK PMIX_RANK PMI_RANK
fail() { echo "FAIL: $*"; exit 1; }

out=$("$program" mpi) || fail "$program mpi (alone, as a singleton) exited $?"
[ "$out" = "the program goes on" ] || fail "singleton: printed '$out'"
out=$(env PATH=/nonexistent "$program" mpi) || fail "$program mpi (no orted) exited $?"
[ "$out" = "the program goes on" ] || fail "no orted: printed '$out'"
echo "ok"
