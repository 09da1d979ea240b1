#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs the venv if needed, builds the one release
# profile, runs every test (unit, integration, CLI). Reruns reuse ~/.cache/promptad.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/bootstrap.sh"
source "$here/env.sh"
cd "$here/.."
# Formatting first: it takes a second and fails fast (rustfmt.toml).
cargo fmt --check
cargo test --release --locked --all-targets "$@"
cargo test --release --locked --doc
