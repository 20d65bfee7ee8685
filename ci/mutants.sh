#!/usr/bin/env bash
# Mutation testing of the model's decision code: does `cargo test` notice a wrong model?
#
#   ci/mutants.sh                  # all ~900 mutants (7 h at 28 s a mutant; see Cost)
#   ci/mutants.sh --shard 3/8      # one shard: about 110 mutants, under an hour when idle
#   MUTANTS_FILES="huge_memory" ci/mutants.sh             # some files only
#   MUTANTS_FILES="huge_memory" ci/mutants.sh --iterate   # skip what was caught last time
#   ci/mutants.sh --re 'do_set_pmd'   # extra args go to cargo-mutants
#
# Installs cargo-mutants from crates.io if missing. Each mutant is tested by every test that can
# see a model change: the model's unit and integration tests, the harness's unit tests, the
# catalogue on every profile, the fixture replay, the scenario files and the release table
# (`tests/catalogue.rs`, `fixtures.rs`, `scenarios.rs`, `releases.rs`), without the host trials
# (`--skip host`): they run the real kernel, cannot see a model mutant, and change machine state.
# Left out as well: `tests/cli.rs` (the binary's argument handling and output format, on top of
# the same runner the catalogue drives), `host_safety`, `host_output` and the `kernels` crate.
#
# Cost, measured on the shared 2-core VM (2026-12-01): a mutant used to take a full debuginfo
# rebuild of model (opt-level 2) and harness plus the whole workspace's tests, 60-80 s. Now:
# - the tree is mirrored (rsync) to a scratch copy on tmpfs (${MUTANTS_TREE}, default
#   /dev/shm/khugepaged-mutants) and mutated there in place, so its build directory stays warm
#   between runs and nothing is copied per run; the repository itself is never mutated;
# - the `mutation` cargo profile (Cargo.toml) is the test profile without debuginfo: a one-line
#   model change then rebuilds incrementally in about 6 s instead of 25 s (with debuginfo every
#   codegen unit changes when line numbers move). Optimisation levels are those of `cargo test`;
# - only the test targets above run (also in the build step), and `cargo test` stops at the
#   first failing test binary: on an idle machine a mutant the catalogue or the replay catches
#   costs about 7 s, a survivor about 35 s (the random operation sequences and split tests are
#   most of that). Under the usual load of this VM (load average 5-12) the huge_memory run
#   averaged 29 s a mutant: 21 s caught, 72 s missed.
# One mutant at a time (--in-place), under `nice`; the timeout (MUTANTS_TIMEOUT, 120 s) is about
# 3x a clean run of those tests under load.
#
# Results land in ${MUTANTS_OUT:-target/mutants}/mutants.out of the repository; survivors are in
# missed.txt there. Survivors judged equivalent are listed, with the reason, in
# ci/mutants-equivalent.md.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# rsync mirrors the tree to the scratch copy (below); fresh machines may not have it.
if ! command -v rsync >/dev/null 2>&1; then
    echo "== installing rsync"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q rsync >/dev/null
    else
        echo "ci/mutants.sh: rsync is missing; install it (apt-get install rsync) and rerun" >&2
        exit 1
    fi
fi
if ! cargo mutants --version >/dev/null 2>&1; then
    echo "== installing cargo-mutants"
    cargo install cargo-mutants --locked
fi

# The model's decision code: mapcounts and sharing predicates, MM-ID slots, rmap counters,
# the COW reuse path of memory.rs, khugepaged, /proc views, THP faults and splits, profiles.
# MUTANTS_FILES narrows the run to some of them, e.g. MUTANTS_FILES="folio mm_id".
files=()
for f in ${MUTANTS_FILES:-folio mm_id rmap memory khugepaged task_mmu huge_memory profile}; do
    files+=(-f "model/src/$f.rs")
done
# Of memory.rs only the write-protect fault (COW) path.
exclude_re='^model/src/memory\.rs:.*(Kernel::(write|write_pages|read|access|mark_accessed|handle_mm_fault|handle_pte_fault|do_anonymous_page|alloc_anon_folio_order|do_swap_page|do_fault|finish_fault|can_set_pmd|do_fault_around|zap_pte|release_ptes|zap_range)\b|check_access)'

# Every test target of model (new files in model/tests are picked up), and the harness's
# model-side targets.
tests=(--lib)
for t in model/tests/*.rs; do
    tests+=(--test "$(basename "$t" .rs)")
done
tests+=(--test catalogue --test fixtures --test scenarios --test releases)

out="${MUTANTS_OUT:-target/mutants}"
case "$out" in /*) ;; *) out="$repo/$out" ;; esac
mkdir -p "$out"

tree="${MUTANTS_TREE:-/dev/shm/khugepaged-mutants}"
[ -d "$(dirname "$tree")" ] && [ -w "$(dirname "$tree")" ] || tree="$repo/target/mutants-tree"
mkdir -p "$tree"
# One run per scratch tree: it is mutated in place.
exec 9>"$tree.lock"
if ! flock -n 9; then
    echo "ci/mutants.sh: $tree is in use by another run (lock $tree.lock); set MUTANTS_TREE" >&2
    exit 1
fi
# By content, and without keeping the repository's mtimes: a file a killed run left mutated is
# restored with a fresh mtime, so cargo rebuilds it (an older mtime would look up to date).
rsync -rlpgoD --checksum --delete --exclude /target --exclude /.git "$repo/" "$tree/"
cd "$tree"

# The baseline: the same tests on the unmutated tree (this also warms the build directory).
# cargo-mutants' own baseline runs only the mutated package's tests, where the harness's targets
# named above do not exist, so it is skipped and the timeout is given explicitly.
echo "== baseline: cargo test --profile mutation -p model -p harness ${tests[*]} -- --skip host"
start=$(date +%s)
nice -n 10 cargo test -q --profile mutation -p model -p harness "${tests[@]}" -- --skip host \
    >"$out/baseline.log" 2>&1 || {
    echo "ci/mutants.sh: the tests fail on the unmutated tree; see $out/baseline.log" >&2
    exit 1
}
echo "== baseline passed in $(($(date +%s) - start)) s"

# The test targets go to both cargo commands (`--cargo-arg`), so the build step builds only
# them, not the host tests, the CLI test or the examples.
cargo_args=()
for a in "${tests[@]}"; do
    cargo_args+=("--cargo-arg=$a")
done
nice -n 10 cargo mutants \
    "${files[@]}" -E "$exclude_re" \
    --in-place --profile mutation \
    --test-package model,harness --baseline skip "${cargo_args[@]}" \
    --timeout "${MUTANTS_TIMEOUT:-120}" --build-timeout 600 \
    --output "$out" "$@" \
    -- -- --skip host
