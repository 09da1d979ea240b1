# Sourced by the other scripts: where the venv and the cargo target dir live (outside the clone, so a
# re-run on the same machine reuses them), and what torch-sys needs to find libtorch in the venv.
PROMPTAD_CACHE="${PROMPTAD_CACHE:-$HOME/.cache/promptad}"
export PROMPTAD_VENV="${PROMPTAD_VENV:-$PROMPTAD_CACHE/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PROMPTAD_CACHE/target}"
export VIRTUAL_ENV="$PROMPTAD_VENV"
export PATH="$PROMPTAD_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# Tests and the CLI find the reference Python through this variable.
export PROMPTAD_PYTHON="$PROMPTAD_VENV/bin/python"
