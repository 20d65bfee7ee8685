#!/usr/bin/env bash
# Mutation testing of the model's decision code: does `cargo test` notice a wrong model?
#
#   ci/mutants.sh                  # every shard in turn (several hours on 2 cores)
#   ci/mutants.sh --shard 3/8      # one shard, under an hour on a 2-core machine
#   ci/mutants.sh -f model/src/mm_id.rs   # narrow to one file (extra args go to cargo-mutants)
#
# Installs cargo-mutants from crates.io if missing. Each mutant is tested with the whole
# workspace's tests (the catalogue on every profile and the fixture replay live in harness/)
# but without the host trials (`--skip host`): they run the real kernel, cannot see a model
# mutant, and change machine state. Results land in ${MUTANTS_OUT:-target/mutants}/mutants.out;
# survivors are in missed.txt there. Survivors judged equivalent are listed, with the reason,
# in ci/mutants-equivalent.md.
set -euo pipefail
cd "$(dirname "$0")/.."

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

out="${MUTANTS_OUT:-target/mutants}"
mkdir -p "$out"
exec nice -n 10 cargo mutants \
    "${files[@]}" -E "$exclude_re" \
    --test-workspace true --jobs 1 --timeout 300 --build-timeout 600 \
    --output "$out" "$@" \
    -- -- --skip host
