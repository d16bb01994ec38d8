#!/usr/bin/env bash
# Reference only (not part of the product): times SqueezeNet 1.1 fp32 in
# onnxruntime on this machine, for the "model compute within 1.3x of
# onnxruntime" comparison in docs/benchmarks.md. Installs onnxruntime,
# numpy and pillow from PyPI into target/ort-venv (first run only).
#
#   ./scripts/onnxruntime-reference.sh [RUNS]     prints a table, then one JSON line
#
# Same input as Squall's `preprocess`: the image as BGR, 0..255, NCHW.
# Timed with one intra-op thread (what one tract inference uses) and with
# onnxruntime's default threading (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100}
MODELS=${MODELS_DIR:-../shared/models}
VENV=target/ort-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet onnxruntime numpy pillow >&2
fi
"$VENV/bin/python" - "$MODELS" "$RUNS" <<'PY'
import json, statistics, sys, time
import numpy as np, onnxruntime as ort
from PIL import Image
models, runs = sys.argv[1], int(sys.argv[2])
img = Image.open(f"{models}/kitten_224.png").convert("RGB")
x = np.asarray(img, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)[None].copy()
result = {"onnxruntime": ort.__version__, "runs": runs}
for label, threads in (("one_thread", 1), ("default_threads", 0)):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(f"{models}/squeezenet1.1_fp32.onnx", so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(10):
        out = s.run(None, {name: x})[0].reshape(-1)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    result[f"{label}_p50_us"] = statistics.median(times)
    result[f"{label}_p99_us"] = times[min(len(times) - 1, int(len(times) * 0.99))]
    result["top1"] = [int(out.argmax()), float(out.max())]
print(f"onnxruntime {result['onnxruntime']} SqueezeNet 1.1 fp32, kitten_224.png -> class {result['top1'][0]} p={result['top1'][1]:.6f}")
print(f"one intra-op thread: median {result['one_thread_p50_us']/1000:.2f} ms, p99 {result['one_thread_p99_us']/1000:.2f} ms")
print(f"default threads:     median {result['default_threads_p50_us']/1000:.2f} ms, p99 {result['default_threads_p99_us']/1000:.2f} ms")
print(json.dumps(result))
PY
