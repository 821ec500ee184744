#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (15 device-minutes per session, all tries
# together): beam-search benchmarks against their GPU targets, then the whole UNGER pipeline on
# Amazon Beauty under a time limit. Everything it measures lands in $OUT (default gpu_out/).
#
# Prepare on the CPU machine (git-ignored, about 45 MB to carry):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       recbole==1.2.1 colorlog texttable pandas==2.2.3
#   python -m unger_recbole.data.prepare amazon-beauty --source ../shared/data/amazon-beauty --out dataset/
#   python -m unger_recbole.encoders.precomputed --dataset amazon-beauty --encoder minilm \
#       --out dataset/amazon-beauty/minilm.npz          # the MiniLM wheel is too big to carry
# Then, with the device tool: run(command="bash benchmarks/gpu_session.sh",
#                                 carry=[".whl", "dataset/amazon-beauty"], timeout_s=600)
#
# Options (environment): PIPELINE_SECONDS (default 420) caps the Beauty run; SKIP_BENCHMARKS=1;
# EXTRA="--key=value ..." adds run_unger.py overrides. On a CPU, DEVICE=cpu runs the same steps
# with tiny sizes as a smoke test (ml-100k instead of Beauty).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
PIPELINE_SECONDS=${PIPELINE_SECONDS:-420}
mkdir -p "$OUT"
if [ -d .whl ] && ! python -c "import recbole" 2>/dev/null; then
    pip install -q --no-index --no-deps --target "$PWD/.site" .whl/*.whl
    export PYTHONPATH="$PWD/.site:$PWD"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"
{ date -u; python -c "import torch, numpy, pandas; print('torch', torch.__version__, 'numpy', numpy.__version__,
'pandas', pandas.__version__, 'cuda', torch.cuda.is_available())"; nvidia-smi -L 2>/dev/null; } | tee "$OUT/machine.txt"
# Fail in seconds, not minutes, when a module is missing.
python -c "import unger_recbole.quick_start, unger_recbole.model" || { echo "import check failed"; exit 1; }

if [ "${SKIP_BENCHMARKS:-0}" != 1 ]; then
    if [ "$DEVICE" = cpu ]; then size=(--quick --threads 1); else size=(--dtype bfloat16); fi
    echo "== benchmarks"
    bash benchmarks/run_all.sh --device "$DEVICE" "${size[@]}" --skip quantizers --out-dir "$OUT/benchmarks" \
        2>&1 | tee "$OUT/benchmarks.log"
fi

echo "== UNGER pipeline (limit ${PIPELINE_SECONDS}s)"
if [ "$DEVICE" = cpu ]; then
    job=(--dataset=ml-100k --use_gpu=False --epochs=1 --stage1_epochs=1)
else
    # One GPU: large batches (the data loader dominates at batch 256), learning rate scaled by
    # sqrt(8) with a longer warm-up; bfloat16 autocast. Model selection stays on validation NDCG@10.
    job=(--dataset=amazon-beauty --encoder=precomputed --encoder_file=dataset/amazon-beauty/minilm.npz
         --train_batch_size=2048 --learning_rate=0.0028 --stage1_learning_rate=0.0028 --warmup_steps=300
         --eval_batch_size=4096 --enable_amp=True --stage1_epochs=20)
fi
start=$(date +%s)
timeout "$PIPELINE_SECONDS" python run_unger.py --model=UNGER "${job[@]}" --show_progress=False \
    --results_dir="$OUT/results" --checkpoint_dir="$OUT/saved" --artifact_dir="$OUT/artifacts" ${EXTRA:-} \
    2>&1 | grep -v "Warning\|fillna\|behavior will change\|For example\|^$" | tee "$OUT/pipeline.log"
echo "pipeline exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s" | tee -a "$OUT/pipeline.log"
# The run folder's learning curve is rewritten every epoch, so it is there even after the time limit.
for curve in "$OUT"/saved/*/learning_curve.json; do
    [ -f "$curve" ] && python -m unger_recbole.analysis.learning_curve "$curve" --out "$OUT/learning_curve"
done
# Where the trained model loses the target along its code (needs the finished run's checkpoint).
for run in "$OUT"/saved/UNGER-*; do
    [ -f "$run/run.json" ] && python -m unger_recbole.analysis.code_levels --run "$run" --device "$DEVICE" \
        2>&1 | grep -v "Warning\|fillna\|behavior will change\|For example\|^$" | tee "$OUT/code_levels.txt"
done
rm -rf "$OUT/saved"/*/model.pth "$OUT/saved"/*/stage1_*.pth "$OUT/artifacts"  # keep what comes back small
