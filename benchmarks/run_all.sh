#!/usr/bin/env bash
# Run every benchmark at full size (Amazon Beauty: 22,363 users, 12,101 items; quantizers up to
# 1M items) and write one JSON per script into benchmarks/results/ (or --out-dir).
#
#   bash benchmarks/run_all.sh                                  # CPU, all cores
#   bash benchmarks/run_all.sh --device cuda --dtype bfloat16   # GPU
#   bash benchmarks/run_all.sh --quick                          # smoke test, about a minute
#
# Options: --quick, --device D (cpu), --dtype T (float32; quantizers always run in float32),
# --threads N (default: all cores, 1 with --quick), --out-dir DIR (benchmarks/results),
# --skip NAME (beam_search | unified_vs_two_codes | quantizers; repeatable).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
quick=0 device=cpu dtype=float32 threads="" out_dir=benchmarks/results skip=" "
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --device) device=$2; shift ;;
        --dtype) dtype=$2; shift ;;
        --threads) threads=$2; shift ;;
        --out-dir) out_dir=$2; shift ;;
        --skip) skip="$skip$2 "; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "run_all.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$threads" ]; then
    if [ "$quick" = 1 ]; then threads=1; else threads=$(nproc 2>/dev/null || echo 1); fi
fi
stamp=$(date +%Y%m%d-%H%M%S)
kind=${device%%:*}
mkdir -p "$out_dir"
common=(--device "$device" --threads "$threads")
mode=()
[ "$quick" = 1 ] && mode=(--quick)
status=0

run() {  # name, then the script's own arguments
    local name=$1; shift
    case "$skip" in *" $name "*) echo "== $name: skipped"; return ;; esac
    echo "== $name"
    "$PYTHON" "benchmarks/$name.py" "$@" "${common[@]}" "${mode[@]}" \
        --out "$out_dir/$name-$kind-$stamp.json" || status=1
}

run beam_search --dtype "$dtype" --check --hf-baseline --profile
run unified_vs_two_codes --dtype "$dtype"
run quantizers
echo "== results in $out_dir/*-$kind-$stamp.json"
exit $status
