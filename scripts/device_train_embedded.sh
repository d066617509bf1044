#!/usr/bin/env bash
# Train the embedded model on a leased GPU machine in chunks (one `run` call each, under its 10-minute limit).
# The run folder stays on the machine's disk between the calls of one lease; every call saves before it ends and
# copies what travels back to $OUT: the bf16 safetensors shards (< 16 MiB each), config.json, the index,
# tokenizer.json and train_log.jsonl (the optimizer state, ~200 MB, stays behind: a new lease continues from
# the carried checkpoint with --model, i.e. a warm restart).
#
#   run (first chunk):   MINUTES=8 bash scripts/device_train_embedded.sh
#   run (next lease):    INIT=embedded-ckpt MINUTES=8 bash scripts/device_train_embedded.sh   (carry: embedded-ckpt)
set -euo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
RUN=${RUN:-/tmp/dsocr-embedded}
MINUTES=${MINUTES:-8}
STEPS=${STEPS:-100000}
WORKERS=${WORKERS:-$(( $(nproc) - 2 ))}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m dsocr train -o "$RUN" ${INIT:+--model "$INIT"} --preset embedded --steps "$STEPS" \
    --batch-size "${BATCH:-32}" --lr "${LR:-1e-3}" --workers "$WORKERS" --time-limit "$MINUTES" \
    --eval-every "${EVAL_EVERY:-1000}" --eval-pages 16 --save-every 1000 --device cuda
cp "$RUN"/*.safetensors "$RUN"/config.json "$RUN"/model.safetensors.index.json "$RUN"/tokenizer.json \
    "$RUN"/train_log.jsonl "$OUT"/
tail -5 "$RUN"/train_log.jsonl
