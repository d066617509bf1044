#!/usr/bin/env bash
# Train the embedded model on a leased GPU machine in chunks (one `run` call each, under its 10-minute limit).
# The run folder stays on the machine's disk between the calls of one lease; every call saves before it ends and
# copies what travels back to $OUT: the bf16 safetensors shards (< 16 MiB each), config.json, the index,
# tokenizer.json and train_log.jsonl. The optimizer state (~200 MB) stays behind: when a new lease finds no run
# folder, it continues from the carried checkpoint (INIT, e.g. the folder the last chunk's files came back to)
# with fresh optimizer state, i.e. a warm restart.
#
#   every chunk:  STEPS=12000 MINUTES=8.5 bash scripts/device_train_embedded.sh
#   new lease:    INIT=embedded-ckpt STEPS=... MINUTES=... bash scripts/device_train_embedded.sh  (carry: embedded-ckpt, wheels)
#                 (INIT=dsocr/embedded: from the shipped weights, which travel with the working tree)
#
# With a fonts/ folder (scripts/collect_fonts.sh; carry: fonts) the line views are also drawn in its families.
#
# The vision tower trains at the full rate here (VISION_LR_SCALE=1): the glyph loss (GLYPH_WEIGHT=0.1) keeps
# it from collapsing (docs/training.md, run 2). ALIGN_WEIGHT=0, SNIPPETS=0.5, QUERY_POSITIONS=0 by default,
# SNIPPET_FONTS=LO-HI (px) and GLYPH_SLOTS=1 optional. The embedded model reads lines (docs/training.md, run 4):
#
#   STRIPS=1 SNIPPETS=0 MODE=base BATCH=64 STEPS=6000 SAVE_EVERY=500 WARMUP=300 MINUTES=8 bash scripts/device_train_embedded.sh
#
# WINDOW=1 (with INIT) trains a copy of INIT with SAM's global layers windowed; EVAL=1 measures the saved
# checkpoint (and EVAL_BASELINE) on the held-out pages at the end of the call (both below).
#
# three calls of one lease (the last one ends at STEPS), back to back: the machine is given back 30 s after a call. They are passed explicitly so that a warm restart (a
# fine-tuning run as far as `dsocr train` knows) keeps them. SAVE_EVERY=1000 steps: each save logs the vision
# spread and the teacher-forced check (train.teacher_forced) on held-out snippets.
#
# STEPS is the length of the learning-rate schedule (warmup, then cosine to 10%); a chunk stops at STEPS or after
# MINUTES, whichever comes first, so the last chunk's STEPS is set to end inside its minutes.
set -euo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Pure-Python training dependencies the machine lacks (pyspellchecker: the line views' English words) travel as
# wheels (`pip download --no-deps pyspellchecker -d wheels`, carry: wheels) and are imported from the zip files.
for wheel in wheels/*.whl; do [[ -f $wheel ]] && PYTHONPATH=$PYTHONPATH:$PWD/$wheel; done
python3 -c "import spellchecker" 2>/dev/null || echo "warning: no pyspellchecker: line views cannot be drawn"
# Extra font families for the line views (dsocr.training.fonts), carried as fonts/ (scripts/collect_fonts.sh).
FONTS=${FONTS:-$([[ -d fonts ]] && echo "$PWD/fonts" || true)}
RUN=${RUN:-/tmp/dsocr-embedded}
OUT=${OUT:-/tmp/out}
WORKERS=${WORKERS:-$(( $(nproc) - 2 ))}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a smoke test of the whole script here (a few STEPS, ACC_PAGES=1)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
# The data workers' CPUs (run 7 waited for data 44% of the time): cores, threads per core, model.
lscpu 2>/dev/null | grep -E "^(CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|Model name)" | tr -s ' ' || true
mount -o remount,size=48G /dev/shm 2>/dev/null || true  # batches travel from the workers through it
df -h /dev/shm | tail -1
# WINDOW=1: start from INIT with SAM's global layers made windowed (scripts/window_sam.py; docs/training.md, run
# 10), made once per lease on the machine's disk, so no other checkpoint needs to travel.
if [[ ${WINDOW:-0} == 1 && -n ${INIT:-} ]]; then
    windowed=/tmp/dsocr-windowed
    [[ -f $windowed/config.json ]] || python3 scripts/window_sam.py "$INIT" "$windowed"
    INIT=$windowed
fi
from=()
if [[ ! -f $RUN/trainer_state.pt && -n ${INIT:-} ]]; then
    RUN=$RUN-warm; from=(--model "$INIT")
    if [[ -f $RUN/trainer_state.pt ]]; then  # a later call of the lease: `dsocr train` resumes its state
        echo "continuing the warm restart in $RUN"
    else
        echo "no run state on this machine: warm restart from $INIT"
    fi
fi
echo "train $RUN: vision_lr_scale=${VISION_LR_SCALE:-1} glyph_weight=${GLYPH_WEIGHT:-0.1}" \
    "align_weight=${ALIGN_WEIGHT:-0} snippets=${SNIPPETS:-0.5} query_positions=${QUERY_POSITIONS:-0}" \
    "snippet_fonts=${SNIPPET_FONTS:-default} strips=${STRIPS:-0} mode=${MODE:-gundam} batch=${BATCH:-32}" \
    "workers=$WORKERS fonts=${FONTS:-none}"
python3 -m dsocr train -o "$RUN" "${from[@]}" --preset embedded --steps "${STEPS:-12000}" \
    --batch-size "${BATCH:-32}" --lr "${LR:-1e-3}" --warmup-steps "${WARMUP:-300}" --workers "$WORKERS" \
    --time-limit "${MINUTES:-8.5}" --eval-every 1000000 --eval-pages "${EVAL_PAGES:-4}" \
    --vision-lr-scale "${VISION_LR_SCALE:-1}" --glyph-weight "${GLYPH_WEIGHT:-0.1}" \
    --align-weight "${ALIGN_WEIGHT:-0}" --snippets "${SNIPPETS:-0.5}" --query-positions "${QUERY_POSITIONS:-0}" \
    --strips "${STRIPS:-0}" --mode "${MODE:-gundam}" \
    ${FONTS:+--fonts "$FONTS"} ${SNIPPET_FONTS:+--snippet-fonts ${SNIPPET_FONTS/-/ }} ${GLYPH_SLOTS:+--glyph-slots} --save-every "${SAVE_EVERY:-1000}" --device "$DEVICE"
cp "$RUN"/*.safetensors "$RUN"/config.json "$RUN"/model.safetensors.index.json "$RUN"/tokenizer.json \
    "$RUN"/train_log.jsonl "$OUT"/
grep -v '"loss"' "$RUN"/train_log.jsonl | tail -3 || true
awk 'NR % 50 == 0' "$RUN"/train_log.jsonl | tail -30
tail -2 "$RUN"/train_log.jsonl
# EVAL=1 (the lease's last call): the held-out pages and the sample read by the checkpoint just saved, and by
# EVAL_BASELINE (e.g. dsocr/embedded) in the same call, float32 on the GPU (~2 minutes each; the shipping
# decision's figures, to be measured again on the CPU before shipping).
evaluate() {  # MODEL NAME: $OUT/NAME.json, the whole output in $OUT/NAME.log (a failure's reason too)
    if python3 benchmarks/accuracy.py --model "$1" --device "$DEVICE" --dtype float32 --speed-pages 1 \
            --pages "${ACC_PAGES:-32}" --json "$OUT/$2.json" >"$OUT/$2.log" 2>&1; then
        grep -E "^(held-out|real)" "$OUT/$2.log" || true
    else
        echo "evaluation of $1 failed:"; tail -5 "$OUT/$2.log"
    fi
}
if [[ ${EVAL:-0} == 1 ]]; then
    evaluate "$RUN" accuracy
    if [[ -n ${EVAL_BASELINE:-} ]]; then evaluate "$EVAL_BASELINE" accuracy-baseline; fi
fi
