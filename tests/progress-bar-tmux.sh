#!/usr/bin/env bash
# The progress bar in a real terminal: runs examples/progress_bar inside a detached tmux pane
# (100 columns), waits for it to end, captures the screen and checks what a user would see:
# one bar line, redrawn in place (not one line per redraw), finished at 100% with a newline
# before the program's own output; with an unknown total (a producer) and with nested runs
# (only the outer bar) too.  Skips (77) without tmux.
#   progress-bar-tmux.sh BUILD_ROOT
set -uo pipefail
build=${1:?build root}
command -v tmux >/dev/null || { echo "skip: no tmux"; exit 77; }
example="$build/examples/progress_bar"
# Each check on a tmux server of its own (-L), never reused: a new session sent to a server
# whose last session was just killed meets it exiting ("server exited unexpectedly"), and test
# runs side by side must not share one server either.
session=""
tmux() { command tmux -L "$session" "$@"; }
fail=0
trap '[ -n "$session" ] && tmux kill-server 2>/dev/null' EXIT

# check MODE N WANT: the screen after the run shows exactly one bar line, WANT, then the
# example's summary line.
check() {
    local mode=$1 n=$2 want=$3 screen
    [ -n "$session" ] && tmux kill-server 2>/dev/null
    session="pjbar$$-$mode"
    tmux new-session -d -s "$session" -x 100 -y 20 \
        "$example threading $mode $n; echo EXIT=\$?; sleep 120"
    for _ in $(seq 600); do
        screen=$(tmux capture-pane -p -t "$session")
        grep -q '^EXIT=' <<<"$screen" && break
        sleep 0.1
    done
    local bars last summary
    bars=$(grep -c 'tasks/s elapsed' <<<"$screen")
    last=$(grep 'tasks/s elapsed' <<<"$screen" | tail -1)
    summary=$(grep -A1 'tasks/s elapsed' <<<"$screen" | tail -1)
    if [ "$bars" != 1 ] || ! grep -Eq "$want" <<<"$last" || ! grep -q 'succeeded$' <<<"$summary" \
        || ! grep -q '^EXIT=0$' <<<"$screen"; then
        echo "FAIL $mode: $bars bar lines; want /$want/; screen:"; echo "$screen"; fail=1
    else
        echo "ok   $mode: $last"
    fi
}

check array 150 '^150/150 100% \|#+\| [0-9.]+ tasks/s elapsed 0:0[0-9] eta 0:00 *$'
check producer 120 '^120/120 100% \|#+\| [0-9.]+ tasks/s elapsed 0:0[0-9] eta 0:00 *$'
check nested 200 '^10/10 100% \|#+\| [0-9.]+ tasks/s elapsed 0:0[0-9] eta 0:00 *$'
exit $fail
