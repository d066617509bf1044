#!/usr/bin/env bash
# Several first chunks of the embedded model's training side by side on one leased GPU (one `run` call), then
# the best of them continued alone (the next calls). Each variant is scripts/device_train_embedded.sh with its
# own settings, run folder /tmp/dsocr-NAME and a share of the CPU cores; the GPU is shared.
#
#   first call:   VARIANTS="v1:VISION_LR_SCALE=1 v01:VISION_LR_SCALE=0.1" STEPS=9000 MINUTES=8 \
#                     bash scripts/device_sweep_embedded.sh
#   next calls:   RUN=$(bash scripts/device_sweep_embedded.sh best) STEPS=... MINUTES=8.5 \
#                     bash scripts/device_train_embedded.sh
#
# A variant is NAME:KEY=VALUE[,KEY=VALUE...] with the keys of device_train_embedded.sh. At the end each
# variant's reading of two held-out snippets is shown (scripts/show_reading.py). "best" prints the run folder
# whose last teacher-forced check (logged at every save) has the most exact tokens, the lowest recent decoder
# loss breaking ties. The logs come back through $OUT as NAME.jsonl.
set -euo pipefail
OUT=${OUT:-/tmp/out}
if [[ ${1:-} == best ]]; then
    python3 - <<'EOF'
import glob, json
def score(run):
    """Higher is better: the last teacher-forced share of exact tokens (what is read, whatever the extra losses),
    then minus the decoder loss over the last 20 logged steps."""
    records = [json.loads(line) for line in open(f"{run}/train_log.jsonl")]
    checks = [r["tf_top1"] for r in records if "tf_top1" in r]
    losses = [r["loss"] for r in records if "loss" in r][-20:]
    return (checks[-1] if checks else -1.0, -sum(losses) / len(losses) if losses else float("-inf"))
runs = [r.rsplit("/", 1)[0] for r in glob.glob("/tmp/dsocr-*/train_log.jsonl")]
print(max(runs, key=score))
EOF
    exit 0
fi
mkdir -p "$OUT"
read -r -a variants <<< "${VARIANTS:?VARIANTS=\"name:KEY=VALUE,... ...\"}"
share=$(( ($(nproc) - 2) / ${#variants[@]} ))
pids=()
for variant in "${variants[@]}"; do
    name=${variant%%:*}
    settings=${variant#*:}
    (
        IFS=, read -r -a pairs <<< "$settings"
        for pair in "${pairs[@]}"; do export "${pair?}"; done
        RUN=/tmp/dsocr-$name OUT=/tmp/out-$name WORKERS=$share bash scripts/device_train_embedded.sh \
            > "/tmp/sweep-$name.log" 2>&1
    ) &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for variant in "${variants[@]}"; do
    name=${variant%%:*}
    cp "/tmp/dsocr-$name/train_log.jsonl" "$OUT/$name.jsonl" || true
    echo "== $name ($variant)"
    tail -4 "/tmp/sweep-$name.log"
    PYTHONPATH=$PWD timeout 60 python3 scripts/show_reading.py "/tmp/dsocr-$name" --snippets 2 --pages 0 \
        --chars 120 2>&1 | tail -6 || true
done
echo "best: $(bash "$0" best)"
exit $status
