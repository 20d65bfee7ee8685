#!/usr/bin/env bash
# Flake loops (issue 11): the same run N times, with what went wrong in each and per case.
#
#   ci/loops.sh host N [ARGS...]          N runs of `khugepaged --backend both ARGS` on this
#                                         machine (default ARGS: all:anon; deterministic mode)
#   ci/loops.sh qemu KERNEL N MODE        N runs in one boot of a ci/kernels kernel:
#       MODE deterministic: khugepaged --backend both --tmpfs --extras all:all
#       MODE selftest:      the same with --khugepaged selftest (the selftest's own settings)
#       MODE c:             the kernel's own C selftest, all:all on the guest's huge tmpfs
#
# A run counts as bad when it exits non-zero, or (harness) any case is not agree / both skip,
# or (C selftest) any step fails. Logs go to $LOOPS_DIR (default target/loops/).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${LOOPS_DIR:-target/loops}
mkdir -p "$dir"

usage() {
    sed -n '2,12p' "$0" >&2
    exit 2
}

# Per-run verdicts of the harness's --backend both output on stdin (one run per
# "Comparing this kernel" header), then the totals.
summarize_both() {
    awk '
        /^Comparing this kernel/ { run++; bad[run] = "" }
        /^(DISAGREE|both fail|explained) / {
            sub(/^(both fail|explained) +|^DISAGREE +/, "", $0)
            verdict = substr($0, 1, 200)
            bad[run] = bad[run] (bad[run] == "" ? "" : "; ") verdict
            cases[verdict]++
        }
        /^[0-9]+ agree, / { summary[run] = $0 }
        /@@kernels: exit [0-9]+ status / { status[run] = $(NF - 2) }
        END {
            nbad = 0
            for (r = 1; r <= run; r++) {
                st = (r in status) ? " (exit " status[r] ")" : ""
                printf "run %d: %s%s%s\n", r, summary[r], st, (bad[r] == "" ? "" : "; not agreeing: " bad[r])
                if (bad[r] != "" || summary[r] == "" || (r in status && status[r] != 0)) nbad++
            }
            printf "%d runs, %d with a case that did not agree\n", run, nbad
            for (c in cases) printf "  %3d  %s\n", cases[c], c
        }'
}

# The C selftest's output on stdin: per run (one per "@@kernels: run" line), the tests
# with a failed step.
summarize_c() {
    awk '
        { gsub(/\033\[[0-9;]*m/, "") }
        /@@kernels: run / { run++; bad[run] = ""; test = "" }
        /Run test: / { test = $0; sub(/.*Run test: /, "", test) }
        /\.\.\.+ Fail/ {
            if (index(bad[run], test) == 0) {
                bad[run] = bad[run] (bad[run] == "" ? "" : "; ") test
                cases[test]++
            }
        }
        /@@kernels: exit [0-9]+ status / { status[run] = $(NF - 2) }
        END {
            nbad = 0
            for (r = 1; r <= run; r++) {
                printf "run %d: exit %s%s\n", r, status[r], (bad[r] == "" ? "" : "; failed: " bad[r])
                if (bad[r] != "") nbad++
            }
            printf "%d runs, %d with a failed test\n", run, nbad
            for (c in cases) printf "  %3d  %s\n", cases[c], c
        }'
}

case "${1:-}" in
host)
    [ $# -ge 2 ] || usage
    n=$2
    shift 2
    [ $# -gt 0 ] || set -- all:anon
    cargo build -q --release -p harness --bin khugepaged
    log="$dir/host-$(date +%Y%m%dT%H%M%S).log"
    start=$(date +%s)
    for i in $(seq 1 "$n"); do
        rc=0
        nice -n 10 target/release/khugepaged --backend both "$@" >>"$log" 2>&1 || rc=$?
        echo "@@kernels: exit $((i - 1)) status $rc after -" >>"$log"
    done
    echo "host: $n runs of khugepaged --backend both $* in $(($(date +%s) - start))s; log $log"
    summarize_both <"$log"
    ;;
qemu)
    [ $# -eq 4 ] || usage
    kernel=$2 n=$3 mode=$4
    case $mode in
    deterministic) run=(--repeat "$n" "$kernel" -- --backend both --tmpfs --extras all:all) ;;
    selftest) run=(--repeat "$n" "$kernel" -- --backend both --khugepaged selftest --tmpfs --extras all:all) ;;
    c) run=(--repeat "$n" --c-selftest "$kernel" -- all:all /mnt/tmpfs-huge) ;;
    *) usage ;;
    esac
    log="$dir/qemu-$kernel-$mode-$(date +%Y%m%dT%H%M%S).log"
    start=$(date +%s)
    rc=0
    ci/kernels run --timeout $((600 + n * 600)) "${run[@]}" >"$log" 2>&1 || rc=$?
    echo "qemu $kernel $mode: $n runs in one boot in $(($(date +%s) - start))s (ci/kernels exit $rc); log $log"
    if [ "$mode" = c ]; then summarize_c <"$log"; else summarize_both <"$log"; fi
    ;;
*) usage ;;
esac
