#!/usr/bin/env bash
# The checks that need a GPU, as one script to run on a GPU machine: `bash benchmarks/gpu_check.sh`
# (about 9 minutes on one GPU). Writes everything under $OUT, or result/gpu_check.
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
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  python -m pytest -q -k cuda tests/losses/test_hyp2.py tests/test_metrics.py tests/test_hasher.py 2>&1 | tail -3
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
} 2>&1 | tee "$OUT/checks.txt"
for spec in "googlenet 448" "alexnet 224"; do
  set -- $spec
  for amp in "" "--amp"; do
    python benchmarks/train_speed.py --backbone "$1" --image_size "$2" --batch_size 100 --steps 20 \
      --workers 8 --root /tmp/hyp2-jpegs --device cuda $amp --json "$OUT/train_speed_$1${amp:+_amp}.json" 2>&1 | tail -12 \
      | tee -a "$OUT/train_speed.txt"
  done
done
