#!/usr/bin/env bash
# What CI runs, and what a developer runs before pushing: formatting, lints, then the README's
# test command. Works on a fresh machine with only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test (the README's test command)"
cargo test --workspace
