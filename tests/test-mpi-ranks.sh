#!/bin/sh
# Ranks killed from outside, under mpirun -n 3 (mpi-run.sh), with mpi-victim as the program:
#  1. rank 0 SIGKILLed in the middle of a run: 2 s later no rank and no local worker is alive
#     (the worker ranks see rank 0 silent, kill their workers and abort the job);
#  2. a worker rank SIGKILLed in the middle of a run: the run returns an error within a few
#     seconds, naming the rank, and the program exits;
#  3. worker ranks running another build of the program (mpirun's MPMD form): the pool is
#     refused with PJ_ERESOLVE (-14) and a message naming the ELF build-id.
#   usage: test-mpi-ranks.sh MPI_RUN MODULE VICTIM OTHER_BUILD
run=$1 module=$2 victim=$3 other=$4
[ -f "$module" ] && command -v mpirun >/dev/null 2>&1 || exit 77
victim=$(readlink -f "$victim")
# These jobs end by a rank's death or MPI_Abort, without MPI_Finalize: what MPI itself holds
# then is no leak of parjob's (an ASan build's LeakSanitizer would report Open MPI's).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; cat "$tmp"/out 2>/dev/null; exit 1; }

# The victim's processes (ranks and their local workers), as "pid rank" lines: rank is the
# rank a process was started as, "w" for a local worker (PARJOB_WORKER_FD).
victims() {
    for d in /proc/[0-9]*; do
        [ "$(readlink "$d/exe" 2>/dev/null)" = "$victim" ] || continue
        env=$(tr '\0' '\n' < "$d/environ" 2>/dev/null)
        rank=$(printf '%s\n' "$env" | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
        printf '%s\n' "$env" | grep -q '^PARJOB_WORKER_FD=' && rank=w
        echo "${d#/proc/} ${rank:-?}"
    done
}

# Whether process $1 lives: a zombie does not (its parent, mpirun's, reaps it when it can).
alive() {
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$state" ] && [ "$state" != Z ]
}

# Starts the victim (its arguments: seconds per task, tasks); returns once its run is under way.
start() {
    : > "$tmp"/out
    "$run" "$module" "$victim" "$@" > "$tmp"/out 2>&1 &
    mpirun_pid=$!
    for i in $(seq 600); do
        grep -q '^running' "$tmp"/out && return 0
        grep -q '^returned' "$tmp"/out && fail "the run could not start"
        sleep 0.1
    done
    fail "the run did not start within 60 s"
}

# Waits for mpirun to end (up to $1 s); kills what is left of the job otherwise.
finish() {
    for i in $(seq $(($1 * 10))); do
        kill -0 "$mpirun_pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$mpirun_pid" 2>/dev/null
    for p in $(victims | cut -d' ' -f1); do kill -9 "$p" 2>/dev/null; done
    return 1
}

# 1. rank 0 killed.
start 30 100
sleep 1 # the local workers start their first tasks
victims > "$tmp"/all
rank0=$(awk '$2 == "0" { print $1 }' "$tmp"/all)
[ -n "$rank0" ] || fail "no rank 0 among: $(cat "$tmp"/all)"
grep -q ' w$' "$tmp"/all || fail "no local worker among: $(cat "$tmp"/all)"
kill -9 "$rank0"
sleep 2
for p in $(cut -d' ' -f1 "$tmp"/all); do
    alive "$p" && fail "process $p ($(grep "^$p " "$tmp"/all)) alive 2 s after rank 0 was killed"
done
finish 10 || fail "mpirun did not end 10 s after rank 0 was killed"
echo "ok: nothing of the job alive 2 s after rank 0 was SIGKILLed"

# 2. worker rank 1 killed (its supervisor; its local workers die with it).
start 0.2 200
sleep 1
rank1=$(victims | awk '$2 == "1" { print $1 }')
[ -n "$rank1" ] || fail "no rank 1"
t0=$(date +%s.%N)
kill -9 "$rank1"
for i in $(seq 100); do
    grep -q '^returned' "$tmp"/out && break
    sleep 0.1
done
t1=$(date +%s.%N)
line=$(grep '^returned' "$tmp"/out) || fail "the run had not returned 10 s after rank 1 was killed"
echo "$line"
case $line in
    "returned 0 "*) fail "the run returned no error after a worker rank was killed" ;;
esac
echo "$line" | grep -q 'rank 1' || fail "the error does not name rank 1"
finish 20 || fail "mpirun did not end after the run returned"
echo "ok: the run returned an error $(echo "$t1 - $t0" | bc) s after rank 1 was SIGKILLed"

# 3. another build on the worker ranks.
out=$(PJ_MPI_RANKS=1 timeout 60 "$run" "$module" "$victim" 0.1 4 : -n 2 "$other" 0.1 4 2>&1)
line=$(printf '%s\n' "$out" | grep '^returned') || fail "no answer from another build: $out"
echo "$line"
case $line in
    "returned -14 "*build-id*) ;;
    *) fail "another build on the worker ranks was not refused with PJ_ERESOLVE and its build-id" ;;
esac
echo "ok: another build on the worker ranks is refused"
