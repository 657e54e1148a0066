#!/usr/bin/env bash
# The GPU figures in one run (at most ~8 minutes on one H100/H200), appended to BENCHMARKS.md:
#   1. VGG-16 at 224, bf16, channels_last: training MFU against the dense bf16 peak, eager and compiled
#   2. the tutorials' VGG-11 (width 1/4, 4096-unit FC layers) at 224: our step against their loop
#   3. time to 93% Fashion-MNIST test accuracy with the fast recipe (stops there)
#   4. one epoch in fp16 with the grad scaler
#   5. torchrun --nproc_per_node 1 (nccl): one epoch
#
#   bash benchmarks/gpu.sh              # on the GPU machine, after bash scripts/setup.sh
#   bash benchmarks/gpu.sh --dry-run    # every step, tiny, on the CPU, writing to a temp file (CI runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
CN=.venv/bin/classicnets
TORCHRUN=.venv/bin/torchrun
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ "${1:-}" == "--dry-run" ]]; then
  DEVICE=cpu; OUT="$WORK/BENCHMARKS.md"; LIMIT=60
  BIG=(--width 0.0625 --size 32 --batch 8 --steps 1 --warmup 1 --no-peak)
  TUTORIAL=(--width 0.0625 --fc-width 64 --size 32 --batch 8 --steps 1 --warmup 1 --no-peak)
  TRAIN=(--epochs 1 --limit-train 256 --limit-test 128 --batch-size 64 --width 0.125)
  COMPILE=()  # torch.compile on a CPU takes minutes: the dry run checks the eager path only
  STOP=(--stop-at-accuracy 0.93 "${TRAIN[@]}")
else
  [[ -n "${1:-}" ]] && { echo "usage: bash benchmarks/gpu.sh [--dry-run]" >&2; exit 2; }
  DEVICE=cuda; OUT=BENCHMARKS.md; LIMIT=150
  BIG=(--width 1 --size 224 --batch 128 --seconds 15)
  TUTORIAL=(--width 0.25 --fc-width 4096 --size 224 --batch 128 --seconds 15)
  TRAIN=(--epochs 1)
  COMPILE=(--compile)
  STOP=(--stop-at-accuracy 0.93 --epochs 10)
fi

run() {  # name, then the command: runs it under a time limit, keeps its output for the report
  local name=$1; shift
  echo "== $name: $*" >&2
  local start=$SECONDS
  timeout "$LIMIT" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || {
    echo "$name failed or ran past ${LIMIT}s (exit $?); its last lines:" >&2; tail -5 "$WORK/$name.err" >&2; exit 1; }
  echo "$name: $((SECONDS - start)) s" >&2
}

run vgg16_eager $CN bench --model vgg16 --channels 3 --precision bf16 --channels-last --no-baseline \
  --device "$DEVICE" --json "${BIG[@]}"
if [[ ${#COMPILE[@]} -gt 0 ]]; then
  run vgg16_compiled $CN bench --model vgg16 --channels 3 --precision bf16 --channels-last --no-baseline \
    --device "$DEVICE" --json "${COMPILE[@]}" "${BIG[@]}"
fi
run tutorials $CN bench --model vgg11 --device "$DEVICE" --json "${TUTORIAL[@]}"
run to_93 $CN train --device "$DEVICE" --progress none --no-plots --run-dir "$WORK/to93" "${STOP[@]}"
run fp16 $CN train --device "$DEVICE" --precision fp16 --progress none --no-plots --run-dir "$WORK/fp16" "${TRAIN[@]}"
run torchrun $TORCHRUN --standalone --nproc_per_node 1 -m classicnets train --device "$DEVICE" --progress none \
  --no-plots --run-dir "$WORK/ddp" "${TRAIN[@]}"

.venv/bin/python - "$WORK" "$OUT" "$DEVICE" <<'PY'
import datetime, json, pathlib, sys
work, out, device = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
lines = [f"\n### benchmarks/gpu.sh, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC ({device})\n"]
for name in ("vgg16_eager", "vgg16_compiled", "tutorials"):
    path = work / f"{name}.out"
    if path.exists():
        d = json.loads(path.read_text())
        mfu = d.get("train_mfu")
        lines.append(f"- {name}: {d['train_images_per_sec']:.1f} train img/s, MFU "
                     f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'}, peak {d['peak_memory_bytes'] / 2**30:.2f} GiB"
                     + (f", {d['speedup']:.2f}x the tutorials' loop" if d.get("speedup") else "")
                     + f" ({d['machine']['name']})")
for name in ("to_93", "fp16", "torchrun"):
    done = [l for l in (work / f"{name}.out").read_text().splitlines() if l.startswith(("completed", "stopped"))]
    lines.append(f"- {name}: {done[-1] if done else 'no summary line'}")
with open(out, "a") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "appended to $OUT" >&2
