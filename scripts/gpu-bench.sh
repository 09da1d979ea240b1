#!/usr/bin/env bash
# The GPU measurements of issue 12 in one call, for a machine with CUDA and PyTorch but no cargo
# (the project's device tool). Build and pack the binary here first:
#
#   source scripts/env.sh && cargo build --release --locked --bin promptad
#   mkdir -p .device .git/info && echo /.device/ >> .git/info/exclude
#   strip -o .device/promptad "$CARGO_TARGET_DIR/release/promptad" && gzip -f .device/promptad
#
# then run `bash scripts/gpu-bench.sh .device/promptad.gz` there with `.device` carried (the
# gzipped binary is ~47 MB). Results go to $OUT (or ./gpu-bench-out): doctor.txt, one bench JSON
# per precision and batch size, and archive.txt (the scoring of a generated archive).
#
# DEVICE, IMAGES and ARCHIVE (defaults cuda, 1024, 2000) shrink it for a dry run on a CPU:
#   DEVICE=cpu IMAGES=16 ARCHIVE=8 bash scripts/gpu-bench.sh .device/promptad.gz
#
# Not yet run on a GPU: none was lent to the sessions that wrote it (docs/scale.md).
set -euo pipefail
packed="${1:?usage: scripts/gpu-bench.sh PATH/promptad.gz}"
out="${OUT:-$PWD/gpu-bench-out}"
work="${TMPDIR:-/tmp}/promptad-gpu-bench"
device="${DEVICE:-cuda}" images="${IMAGES:-1024}" archive="${ARCHIVE:-2000}"
mkdir -p "$out" "$work"

bin="$work/promptad"
gunzip -c "$packed" > "$bin"
chmod +x "$bin"
# libtorch comes from the machine's PyTorch (DESIGN §2: the versions must match exactly).
torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

"$bin" doctor 2>&1 | tee "$out/doctor.txt"

# The demo backbone on 1024² PNGs (generated once, reused), fp32 and bf16, batch 64 and 256.
for precision in fp32 bf16; do
    for batch in 64 256; do
        "$bin" bench --work "$work/bench" --images "$images" --batch-size "$batch" --maps compact \
            --device "$device" --precision "$precision" --format json \
            > "$out/bench-$precision-$batch.json" 2> "$out/bench-$precision-$batch.log"
        python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); row = r["rows"][0]; print(sys.argv[2], "images/s", round(row["images_per_s"], 1), "host core-ms", round(row["host_core_ms_per_image"], 2), "roofline share", round(r["backbone_roofline_share"], 3))' \
            "$out/bench-$precision-$batch.json" "$precision batch $batch"
    done
done

# A generated archive in shards, scored as the nightly job scores it (unlabelled, compact maps).
# synth names images with three digits (at most 1000 per category), so a larger archive is spread
# over as many of its categories as it needs; --plain-category packs them all as one.
synth_categories=(weave marble grid washer bracket pcb)
needed=$(( (archive + 999) / 1000 ))
if (( needed > ${#synth_categories[@]} )); then
    echo "ARCHIVE=$archive: synth generates at most $(( ${#synth_categories[@]} * 1000 )) test images" >&2
    exit 64
fi
categories="$(IFS=,; echo "${synth_categories[*]:0:needed}")"
"$bin" synth --out "$work/archive-src" --categories "$categories" --image-size 1024 --train-good 1 \
    --test-good "$(( (archive + needed - 1) / needed ))" --test-defective 0 --overwrite > /dev/null
"$bin" shard "$work/archive-src" --out "$work/archive" --plain-category nightly --overwrite > /dev/null
{ /usr/bin/time -v "$bin" score --model "$work/bench/model" --data "$work/archive" --category nightly \
    --out "$work/archive-out" --device "$device" --batch-size 256 --overwrite; } > "$out/archive.txt" 2>&1
grep -E "images|Elapsed|Maximum resident" "$out/archive.txt" | tail -5
