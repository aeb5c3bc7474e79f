#!/usr/bin/env bash
# The checks that need a GPU, as one script to run on a GPU machine: `bash benchmarks/gpu_check.sh`
# runs both parts (allow 10-15 minutes on one GPU); `bash benchmarks/gpu_check.sh checks` runs items
# 1-4 only, `bash benchmarks/gpu_check.sh speed` item 5 only (each well under 10 minutes).
# Writes everything under $OUT, or result/gpu_check.
#   1. the CUDA tests (loss on CUDA, metrics on CUDA tensors = CPU results, the hasher on CUDA);
#   2. train -> --test -> search -> load_hasher for every paper backbone on CUDA, in fp32 and
#      with --amp (tests/test_e2e.py with HYP2_TEST_DEVICE=cuda, HYP2_TEST_AMP=1);
#   3. the demo trained on CUDA in fp32 and with --amp (channels_last, cudnn.benchmark, bf16 path);
#   4. mAP@5000 at NUS-WIDE scale with the codes on the GPU;
#   5. benchmarks/train_speed.py: googlenet 448 and alexnet 224, batch 100, with and without --amp
#      (the "not measured yet" table of docs/training.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-result/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PART=${1:-all}
if [ "$PART" = all ] || [ "$PART" = checks ]; then
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  python -m pytest -q -k cuda tests/losses/test_hyp2.py tests/metrics tests/test_hasher.py 2>&1 | tail -3
  HYP2_TEST_DEVICE=cuda python -m pytest -q tests/test_e2e.py 2>&1 | tail -3
  HYP2_TEST_DEVICE=cuda HYP2_TEST_AMP=1 python -m pytest -q tests/test_e2e.py 2>&1 | tail -3
  for amp in "" "--amp"; do
    python retrieval.py --dataset demo --epochs 3 --device cuda $amp --result_dir "$OUT/demo$amp" 2>&1 | tail -2
  done
  python - <<'PY'
import time, torch
from hyp2.metrics import mean_average_precision
g = torch.Generator().manual_seed(0)
q, d = torch.randn(2100, 48, generator=g), torch.randn(193734, 48, generator=g)
ql, dl = (torch.rand(2100, 21, generator=g) < 0.12).float(), (torch.rand(193734, 21, generator=g) < 0.12).float()
cpu = mean_average_precision(q, d, ql, dl, topk=5000)
args = [t.cuda() for t in (q, d, ql, dl)]
mean_average_precision(*args, topk=5000)
torch.cuda.synchronize(); t = time.perf_counter()
gpu = mean_average_precision(*args, topk=5000)
torch.cuda.synchronize()
print(f"NUS-WIDE scale mAP@5000 on the GPU: {time.perf_counter() - t:.3f} s; equals CPU: {abs(gpu - cpu) < 1e-9}")
PY
  # hyp2.metrics on the GPU at 0.2M and 10M database codes (docs/evaluation.md, "On a GPU"):
  # mAP@5000, evaluate_all@5000 and the whole-ranking mAP, each checked against the CPU except the
  # whole-ranking mAP at 10M codes (minutes on the CPU: GPU time only).
  python - <<'PY'
import time, numpy as np, torch
from hyp2 import metrics as M
rng = np.random.default_rng(0)
q = rng.choice(np.array([-1, 1], np.int8), (2100, 48))
ql = (rng.random((2100, 21)) < 0.12).astype(np.uint8)
for n in (200_000, 10_000_000):
    d = rng.choice(np.array([-1, 1], np.int8), (n, 48))
    dl = (rng.random((n, 21)) < 0.12).astype(np.uint8)
    gpu_args = [torch.from_numpy(a).cuda() for a in (q, d, ql, dl)]
    for name, fn, topk in (("mAP@5000", M.mean_average_precision, 5000),
                           ("evaluate_all@5000", M.evaluate_all, 5000),
                           ("mAP whole ranking", M.mean_average_precision, None)):
        fn(*[a[:1000] for a in gpu_args], topk=topk and 100)  # warm-up
        torch.cuda.synchronize(); t = time.perf_counter()
        gpu = fn(*gpu_args, topk=topk)
        torch.cuda.synchronize(); gpu_s = time.perf_counter() - t
        if topk is None and n > 200_000:  # the CPU whole ranking at 10M takes minutes: GPU time only
            print(f"metrics N={n:,} {name}: GPU {gpu_s:.2f} s", flush=True)
            continue
        t = time.perf_counter()
        cpu = fn(q, d, ql, dl, topk=topk)
        cpu_s = time.perf_counter() - t
        same = abs(gpu - cpu) < 1e-9 if isinstance(gpu, float) else all(
            np.allclose(np.asarray(gpu[k], dtype=float), np.asarray(cpu[k], dtype=float), atol=1e-9)
            for k in ("map", "precision_radius2"))
        print(f"metrics N={n:,} {name}: GPU {gpu_s:.2f} s, CPU {cpu_s:.2f} s, equal: {same}", flush=True)
    del gpu_args
PY
} 2>&1 | tee "$OUT/checks.txt"
fi
if [ "$PART" = all ] || [ "$PART" = speed ]; then
for spec in "googlenet 448" "alexnet 224"; do
  set -- $spec
  for amp in "" "--amp"; do
    python benchmarks/train_speed.py --backbone "$1" --image_size "$2" --batch_size 100 --steps 20 \
      --workers 8 --root /tmp/hyp2-jpegs --device cuda $amp --json "$OUT/train_speed_$1${amp:+_amp}.json" 2>&1 | tail -12 \
      | tee -a "$OUT/train_speed.txt"
  done
done
fi
