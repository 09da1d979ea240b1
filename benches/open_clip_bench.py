"""The reference side of `cargo bench --bench embed`: open_clip's encode_image on the same weights,
fp32 CPU, one batch size, in its own process. Prints one JSON line.

    python benches/open_clip_bench.py WEIGHTS.safetensors BATCH MIN_SECONDS
"""
import json
import resource
import sys
import time

import torch
import open_clip
from safetensors.torch import load_file

weights, batch, min_seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
model = open_clip.create_model("ViT-B-16-plus-240", pretrained=None)
model.load_state_dict(load_file(weights), strict=True)
model.eval()
images = torch.randn(batch, 3, 240, 240)
with torch.inference_mode():
    model.encode_image(images)  # warm-up
    iterations, started = 0, time.perf_counter()
    while iterations < 2 or time.perf_counter() - started < min_seconds:
        model.encode_image(images)
        iterations += 1
    seconds = time.perf_counter() - started
print(json.dumps({"impl": "open_clip encode_image", "batch": batch, "iterations": iterations,
                  "images_per_s": batch * iterations / seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "threads": torch.get_num_threads()}))
