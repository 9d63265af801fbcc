#!/usr/bin/env bash
# GPU smoke run: every chapter in quick mode on the GPU, then chapter 3's gpu preset
# for a few steps in fp16, stopped half way and resumed. Prints wall time, seconds per
# optimizer step and peak memory for each. For the first GPU at hand, in < 10 minutes.
#
#   bash scripts/gpu_smoke.sh                # on CUDA (fails if torch sees no GPU)
#   bash scripts/gpu_smoke.sh --device cpu   # dry run of the same on the CPU
#   bash scripts/gpu_smoke.sh --chapters "01 03" --steps 50 --precision fp16
#
# Options:
#   --device cuda|cpu         where to run (default cuda; cpu hides any GPU)
#   --chapters "NN ..."|all|none   which chapters to execute in quick mode (default all)
#   --steps N                 optimizer steps of the training run, N >= 2 (default 50)
#   --preset NAME             course_utils.training preset (default gpu)
#   --precision no|fp16|bf16  the training run's mixed precision (default fp16 on cuda,
#                             no on cpu, where fp16 does not run)
#   --cell-timeout S          seconds per notebook cell (default 900)
#   --notebooks DIR           where the chapters are (default notebooks)
#   --out DIR                 results.json and the executed copies (default
#                             .course_cache/gpu_smoke); the chapters themselves are
#                             never written
# Environment: PYTHON (default .venv/bin/python, else python3), COURSE_DATA_DIR (default
# ../shared/data), COURSE_CACHE_DIR (default a fresh temporary folder).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }
fail() {
    echo "gpu_smoke: $*" >&2
    echo "(bash scripts/gpu_smoke.sh --help)" >&2
    exit 2
}
needs_value() { [ $# -ge 2 ] || fail "$1 needs a value"; }

device=cuda chapters=all steps=50 preset=gpu precision="" cell_timeout=900
out=.course_cache/gpu_smoke notebooks=notebooks
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --device) needs_value "$@"; device=$2; shift 2 ;;
        --chapters) needs_value "$@"; chapters=$2; shift 2 ;;
        --steps) needs_value "$@"; steps=$2; shift 2 ;;
        --preset) needs_value "$@"; preset=$2; shift 2 ;;
        --precision) needs_value "$@"; precision=$2; shift 2 ;;
        --cell-timeout) needs_value "$@"; cell_timeout=$2; shift 2 ;;
        --out) needs_value "$@"; out=$2; shift 2 ;;
        --notebooks) needs_value "$@"; notebooks=${2%/}; shift 2 ;;
        *) fail "unknown argument '$1'; expected one of --device, --chapters," \
                "--steps, --preset, --precision, --cell-timeout, --out, --notebooks," \
                "--help" ;;
    esac
done

case "$device" in
    cuda|cpu) ;;
    *) fail "--device must be cuda or cpu, got '$device'" ;;
esac
[[ "$steps" =~ ^[0-9]+$ ]] && [ "$steps" -ge 2 ] \
    || fail "--steps must be a whole number >= 2 (run, stop half way, resume)," \
            "got '$steps'"
[[ "$cell_timeout" =~ ^[0-9]+$ ]] && [ "$cell_timeout" -ge 1 ] \
    || fail "--cell-timeout must be a whole number of seconds >= 1, got '$cell_timeout'"
if [ -z "$precision" ]; then
    if [ "$device" = cuda ]; then precision=fp16; else precision=no; fi
fi
case "$precision" in
    no|bf16) ;;
    fp16) [ "$device" = cuda ] \
        || fail "--precision fp16 needs --device cuda, got --device $device" ;;
    *) fail "--precision must be no, fp16 or bf16, got '$precision'" ;;
esac

shopt -s nullglob
all_chapters=("$notebooks"/[0-9][0-9]_*.ipynb)
shopt -u nullglob
[ ${#all_chapters[@]} -gt 0 ] \
    || fail "--notebooks: expected chapters named NN_topic.ipynb in '$notebooks'," \
            "got none"
numbers=$(printf '%s\n' "${all_chapters[@]##*/}" | sed -E 's|^([0-9]+)_.*|\1|')
selected=()
case "$chapters" in
    all) selected=("${all_chapters[@]}") ;;
    none) ;;
    *)
        for number in $chapters; do
            [[ "$number" =~ ^[0-9]+$ ]] || fail "--chapters takes chapter numbers" \
                "such as \"01 03\", all or none; got '$number'"
            match=$(printf '%s\n' "${all_chapters[@]}" \
                    | grep -E "/0*${number#0}_[^/]*$" || true)
            [ -n "$match" ] || fail "no chapter numbered '$number'; expected one of:" \
                $numbers
            selected+=("$match")
        done ;;
esac

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export COURSE_QUICK=1 MPLBACKEND=Agg PYDEVD_DISABLE_FILE_VALIDATION=1
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export COURSE_DATA_DIR=${COURSE_DATA_DIR:-$root/../shared/data}
export COURSE_CACHE_DIR=${COURSE_CACHE_DIR:-$(mktemp -d)}
if [ "$device" = cpu ]; then
    export CUDA_VISIBLE_DEVICES=""  # the same code, with no GPU to find
elif ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    fail "--device cuda: expected a GPU that torch can see, got none" \
         "(torch.cuda.is_available() is False); use --device cpu for a dry run"
fi
presets=$("$PYTHON" -c \
    "from course_utils.training import PRESETS; print(*sorted(PRESETS))")
[[ " $presets " == *" $preset "* ]] \
    || fail "--preset must be one of: $presets; got '$preset'"
mkdir -p "$out"
echo "gpu_smoke: device $device, chapters: ${selected[*]:-none}; training: preset" \
     "$preset, $steps steps in $precision, resumed at step $((steps / 2)); in $out"

# One JSON line per part in $out/results.jsonl; a failed part is noted, the run goes on.
: > "$out/results.jsonl"
status=0
for notebook in "${selected[@]}"; do
    "$PYTHON" - "$notebook" "$out" "$cell_timeout" <<'PY' || status=1
"""Execute a copy of one chapter with hooks that time optimizer steps, read memory."""
import json, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

path, out, timeout = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
FIRST = '''
import time as _smoke_time, torch as _smoke_torch
from torch.optim.optimizer import register_optimizer_step_post_hook as _smoke_hook
_smoke_steps = []
_smoke_hook(lambda *args, **kwargs: _smoke_steps.append(_smoke_time.perf_counter()))
if _smoke_torch.cuda.is_available():
    _smoke_torch.cuda.reset_peak_memory_stats()
'''
LAST = '''
import json as _smoke_json, resource as _smoke_resource, statistics as _smoke_stats
_gaps = [b - a for a, b in zip(_smoke_steps, _smoke_steps[1:])]
_gpu = _smoke_torch.cuda.is_available()
print("GPU_SMOKE", _smoke_json.dumps({
    "optimizer_steps": len(_smoke_steps),
    "s_per_step": _smoke_stats.median(_gaps) if _gaps else None,
    "peak_memory_mib": (_smoke_torch.cuda.max_memory_allocated() if _gpu else
                        _smoke_resource.getrusage(_smoke_resource.RUSAGE_SELF).ru_maxrss
                        * 1024) / 2**20,
    "memory": "GPU, allocated by torch" if _gpu else "CPU, kernel's peak RSS",
    "device": _smoke_torch.cuda.get_device_name(0) if _gpu else "cpu",
}))
'''
nb = nbformat.read(path, as_version=4)
nb.cells.insert(0, nbformat.v4.new_code_cell(FIRST))
nb.cells.append(nbformat.v4.new_code_cell(LAST))
result = {"part": path.stem, "ok": False}
start = time.perf_counter()
try:
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    result.update(json.loads(text.split("GPU_SMOKE", 1)[1]), ok=True)
except Exception as error:  # record it and go on with the next chapter
    result["error"] = f"{type(error).__name__}: {str(error)[-600:]}"
result["wall_s"] = round(time.perf_counter() - start, 1)
nbformat.write(nb, out / path.name)
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(result) + "\n")
print(f"  {path.stem}: {'ok' if result['ok'] else 'FAILED'} in {result['wall_s']} s",
      flush=True)
sys.exit(0 if result["ok"] else 1)
PY
done

"$PYTHON" - "$out" "$preset" "$steps" "$precision" <<'PY' || status=1
"""Chapter 3's training script: steps/2 steps, stop, resume to the end."""
import json, sys, time
from pathlib import Path

import torch

sys.path.insert(0, "scripts")
import train_unconditional as script  # noqa: E402  (scripts/ is no package)

out, preset, precision = Path(sys.argv[1]), sys.argv[2], sys.argv[4]
steps = int(sys.argv[3])
runs = []
real_train = script.train


def spy(*args: object, **kwargs: object) -> object:
    result = real_train(*args, **kwargs)
    runs.append(result)
    return result


script.train = spy
half = steps // 2
common = ["--preset", preset, "--max-steps", str(steps), "--mixed-precision", precision,
          "--output-dir", str(out / "train"), "--checkpoint-every", str(half)]
result = {"part": f"train_unconditional --preset {preset}", "ok": False,
          "precision": precision, "steps": steps, "resumed_at": half}
gpu = torch.cuda.is_available()
if gpu:
    torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
try:
    if script.main(common + ["--stop-at-step", str(half)]) != 0:
        raise RuntimeError("the first half of the run failed")
    if script.main(common + ["--resume"]) != 0:
        raise RuntimeError("the resumed run failed")
    first, second = runs
    if second.resumed_from_step != half or len(second.losses) != steps:
        raise RuntimeError(f"expected a resume from step {half} to {steps} steps, got "
                           f"from {second.resumed_from_step} to {len(second.losses)}")
    if not all(map(lambda x: x == x, second.losses)):
        raise RuntimeError("NaN losses")
    import resource
    result.update(
        ok=True, s_per_step=(first.seconds_per_step + second.seconds_per_step) / 2,
        final_loss=second.losses[-1],
        peak_memory_mib=(torch.cuda.max_memory_allocated() if gpu else
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        / 2**20,
        memory="GPU, allocated by torch" if gpu else "CPU, process's peak RSS",
        device=torch.cuda.get_device_name(0) if gpu else "cpu")
except Exception as error:
    result["error"] = f"{type(error).__name__}: {str(error)[-600:]}"
result["wall_s"] = round(time.perf_counter() - start, 1)
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(result) + "\n")
sys.exit(0 if result["ok"] else 1)
PY

"$PYTHON" - "$out" <<'PY'
"""The summary table, from results.jsonl."""
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
print(f"\n{'part':<44} {'wall s':>8} {'s/step':>8} {'peak MiB':>9}  memory")
for row in rows:
    if not row["ok"]:
        print(f"{row['part']:<44} {row['wall_s']:>8} FAILED: {row.get('error', '')}")
        continue
    step = "-" if row.get("s_per_step") is None else f"{row['s_per_step']:.3f}"
    print(f"{row['part']:<44} {row['wall_s']:>8} {step:>8} "
          f"{row['peak_memory_mib']:>9.0f}  {row['memory']} ({row['device']})")
print(f"total wall time: {sum(r['wall_s'] for r in rows):.0f} s")
json.dump(rows, open(out / "results.json", "w"), indent=1)
PY
exit $status
