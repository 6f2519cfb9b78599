#!/usr/bin/env bash
# SIGINT, sent from outside as Ctrl-C sends it, ends a fit() run after the current step with a
# checkpoint that holds everything: resumed from it, the run ends with the same checkpoint
# and the same loss log, byte for byte, as a run that was never interrupted.
#
#   adding_problem_interrupt.sh ADDING_PROBLEM WORK_DIR
set -u
exe=$1
dir=$2
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" || exit 2
fail() { echo "adding_problem_interrupt: $*"; for f in *.log; do echo "--- $f"; cat "$f"; done; exit 1; }
common=(--max-time 100 --train-size 4000 --epochs 5 --stop-below 0 --patience 100 --checkpoint-every 0)

"$exe" "${common[@]}" --checkpoint whole.safetensors --csv whole.csv > whole.log 2>&1 || fail "the whole run failed"
# Interrupted once it has logged 100 steps (of 400), wherever it then is.
"$exe" "${common[@]}" --checkpoint part.safetensors --csv part.csv > part.log 2>&1 &
pid=$!
for _ in $(seq 600); do
  [ "$(2>/dev/null wc -l < part.csv || echo 0)" -gt 100 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
grep -q "interrupted at step" part.log || fail "the run did not report an interruption (status $rc)"
[ "$rc" -eq 130 ] || fail "the interrupted run exited with $rc, expected 130"
[ -s part.safetensors ] || fail "no checkpoint after the interruption"
step=$(sed -n 's/.*interrupted at step \([0-9]*\).*/\1/p' part.log)
"$exe" "${common[@]}" --resume part.safetensors --checkpoint part.safetensors --csv part.csv > resumed.log 2>&1 ||
  fail "the resumed run failed"
cmp -s whole.safetensors part.safetensors || fail "the resumed run's final checkpoint differs from the whole run's"
cmp -s whole.csv part.csv || fail "the resumed run's loss log differs from the whole run's"
echo "adding_problem_interrupt: interrupted at step $step, resumed, identical to the uninterrupted run"
