#!/usr/bin/env python3
"""The exact reference side of `cargo bench --bench metrics`: pixel AUROC and AUPRO (FPR 0.3) over
every pixel of the images the benchmark wrote, with numpy / scikit-learn, all pixels in memory.

Run:  $PROMPTAD_PYTHON benches/metrics_reference.py DIR N   (numpy, scipy, scikit-learn)

DIR holds maps.u16 (N x 400 x 400 little-endian u16, the stored scores q; the score is q / 65535)
and masks.u8 (N x 400 x 400, 0 or 1). The metrics are those of tests/fixtures/make_metric_cases.py
(imported, not copied): `ref_auroc` = sklearn.metrics.roc_auc_score over all pixels, and
`ref_pro_curve` + `ref_aupro` = the MVTec AD AUPRO that anomalib >= 2.3 computes (8-connected
regions per image, FPR over all background pixels, PRO = mean per-region overlap, one point per
distinct score, trapezoid to 0.3 with the end point interpolated, divided by 0.3).

Prints one JSON line: the two metrics, the times (load, AUROC, AUPRO, total; imports excluded) and
the peak resident memory of this process (ru_maxrss) and its resident memory before loading.
"""

import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))

import numpy as np  # noqa: E402

import make_metric_cases as ref  # noqa: E402

SIDE = 400
FPR_LIMIT = 0.3


def rss_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    folder, n = sys.argv[1], int(sys.argv[2])
    baseline = rss_mib("VmRSS")
    started = time.perf_counter()
    q = np.fromfile(os.path.join(folder, "maps.u16"), dtype="<u2").reshape(n, SIDE, SIDE)
    masks = np.fromfile(os.path.join(folder, "masks.u8"), dtype=np.uint8).reshape(n, SIDE, SIDE) != 0
    scores = q / float(ref.Q)  # float64: the scores the stored maps stand for
    del q
    loaded = time.perf_counter()
    auroc = ref.ref_auroc(masks.ravel(), scores.ravel())
    auroc_done = time.perf_counter()
    curve, n_regions = ref.ref_pro_curve(scores, masks)
    aupro = ref.ref_aupro(curve, FPR_LIMIT)
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    print(
        json.dumps(
            {
                "case": "reference",
                "images": n,
                "pixel_auroc": auroc,
                "pixel_aupro": aupro,
                "n_regions": n_regions,
                "seconds": done - started,
                "load_seconds": loaded - started,
                "auroc_seconds": auroc_done - loaded,
                "aupro_seconds": done - auroc_done,
                "baseline_rss_mib": baseline,
                "peak_rss_mib": peak,
                "vm_hwm_mib": rss_mib("VmHWM"),
            }
        )
    )


if __name__ == "__main__":
    main()
