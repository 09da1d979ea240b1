#!/usr/bin/env bash
# Creates (or reuses) the Python venv that provides libtorch for tch and the packages the test
# references need. Idempotent: a venv whose recorded requirements match is left alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

# torch must be exactly the version tch/torch-sys 0.24.0 is built for (DESIGN §2). Everything else is
# installed with --no-deps where it would otherwise be free to replace torch.
TORCH="torch==2.11.0"
# pillow and opencv-python-headless are pinned: tests/resize_parity.rs and clip_parity.rs compare our
# ports of their resizes byte for byte (Pillow 13 chooses the pass order; OpenCV's u8 INTER_LINEAR).
NO_DEPS=(open-clip-torch==3.3.0 torchvision==0.26.0 timm==1.0.31 ftfy==6.3.1
         regex tqdm wcwidth pyyaml packaging pillow==13.0.0 opencv-python-headless==5.0.0.93
         safetensors fsspec filelock)
# kubernetes-validate: the Kubernetes JSON schemas (1.25-1.37) that tests/k8s.rs validates the
# rendered k8s/ overlays against, offline.
WITH_DEPS=(huggingface_hub numpy scikit-learn scipy "moto[server]==5.2.5" kubernetes-validate==1.37.0)
# Debian packages: nasm assembles libjpeg-turbo's SIMD code when cargo builds the JPEG decoder
# (src/clip/jpeg.rs; the build fails without it); chromium renders the HTML report in
# tests/report.rs (headless screenshot).
debian=()
command -v nasm >/dev/null 2>&1 || debian+=(nasm)
command -v chromium >/dev/null 2>&1 || debian+=(chromium fonts-dejavu-core)
if [[ ${#debian[@]} -gt 0 ]]; then
  echo "bootstrap: installing the Debian packages ${debian[*]} (see scripts/bootstrap.sh for what each is for)"
  sudo=""
  if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${debian[@]}" >/dev/null
fi

stamp="$TORCH ${NO_DEPS[*]} ${WITH_DEPS[*]}"
marker="$PROMPTAD_VENV/.promptad-requirements"

if [[ -f "$marker" && "$(cat "$marker")" == "$stamp" ]] \
   && "$PROMPTAD_VENV/bin/python" -c "import torch, open_clip, sklearn, safetensors, cv2; assert torch.__version__.startswith('2.11.0')" 2>/dev/null; then
  echo "bootstrap: reusing $PROMPTAD_VENV (torch $("$PROMPTAD_VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
  exit 0
fi

echo "bootstrap: installing into $PROMPTAD_VENV (torch is ~4.7 GB with its CUDA libraries; 2-6 minutes)"
mkdir -p "$(dirname "$PROMPTAD_VENV")"
[[ -x "$PROMPTAD_VENV/bin/python" ]] || python3 -m venv "$PROMPTAD_VENV"
pip="$PROMPTAD_VENV/bin/pip"
"$pip" install --quiet --disable-pip-version-check "$TORCH"
"$pip" install --quiet --disable-pip-version-check --no-deps "${NO_DEPS[@]}"
"$pip" install --quiet --disable-pip-version-check "${WITH_DEPS[@]}" "$TORCH"
"$PROMPTAD_VENV/bin/python" - <<'PY'
import torch, open_clip, sklearn, safetensors, cv2, PIL
assert torch.__version__.startswith("2.11.0"), f"torch {torch.__version__} replaced the pinned 2.11.0"
print("bootstrap: torch", torch.__version__, "open_clip", open_clip.__version__, "sklearn", sklearn.__version__,
      "cv2", cv2.__version__, "Pillow", PIL.__version__)
PY
echo "$stamp" > "$marker"
