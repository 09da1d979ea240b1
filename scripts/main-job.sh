#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: installs the venv if needed, builds
# promptad (release) and runs `promptad demo` on generated data on the CPU (or `promptad ARGS...`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/bootstrap.sh"
source "$here/env.sh"
cd "$here/.."
cargo build --release --locked --bin promptad
if [[ $# -eq 0 ]]; then set -- demo --out promptad-demo --device cpu; fi
exec "$CARGO_TARGET_DIR/release/promptad" "$@"
