#!/usr/bin/env bash
# GPU acceptance for zoo in one command (issue 20): every CUDA path checked and measured in one
# short run on an H100/H200, the numbers kept even when a later step fails or runs out of time.
#
#   bash benchmarks/gpu_acceptance.sh [OUTDIR]           on the GPU machine (<= 8 minutes)
#   bash benchmarks/gpu_acceptance.sh --dry-run [OUTDIR] anywhere, no GPU (also ZOO_GPU_DRY_RUN=1)
#   options: --steps a,b,...  run only these steps (setup always runs)
#            --budget SECONDS the whole run's time (default 470, env ZOO_GPU_BUDGET_S)
#   env:     ZOO_GPU_PYTHON (default python3), ZOO_GPU_SITE (default /tmp/site),
#            ZOO_GPU_PYTEST_ARGS (extra pytest arguments, e.g. "-n 4" with pytest-xdist)
#
# OUTDIR: the argument, else $OUT, else ./gpu-acceptance-out (dry run: else
# ${TMPDIR:-/tmp}/zoo-gpu-acceptance-dry-run). What it holds, rewritten after EVERY step:
#   summary.json      every step's status and time, every target with its measured value
#   results.tar.gz    summary.json, the boards, and every step's log, junit XML and JSON
#   kernels.md, quant-kernels.md, kernels-compile.md   the boards the benchmarks wrote
#   detail/steps/NN-STEP/...   the same files unpacked, and the smoke runs' folders
#   detail/run/meta/...        the plan, the exact commands, a copy of this script's Python half
# (Only the top level is small: the device tool returns at most 8 files, 2 folders deep.)
#
# Steps, in order of value (each with its own timeout, all under one deadline):
#   setup                  install .whl/*.whl into $ZOO_GPU_SITE (pip --no-index --no-deps
#                          --target; nothing else is installed), check them against the
#                          installed versions, record the device; stop if there is no CUDA
#   parity-activations     pytest: every formula kernel vs its reference, fwd/bwd/param-grads,
#                          3 dtypes; the group-rational kernel
#   parity-quant           pytest: the quantization kernels, bitwise against the reference
#   parity-data-var        pytest: the CUDA-only data and VAR tests
#   ddp-nccl               DDP through zoo.train.distributed with NCCL, world size 1
#   bench-kernels          zoo bench kernels --write        (kernels.md)
#   bench-quant            zoo bench quant --device cuda --write   (quant-kernels.md)
#   step-ratio             benchmarks/gpu_step_ratio.py: kat step / vit step
#   bench-kernels-compile  zoo bench kernels --compile --write   (kernels-compile.md)
#   smoke                  zoo train vit, resnet, kat, gpt2, var on cuda (bf16), in parallel:
#                          killed after the first checkpoint, re-run (resumes), run again
#                          (already completed); finite losses
# The parity selections are explicit; the dry run fails if a test that skips without CUDA is
# in none of them (or a selected one no longer skips).
#
# The dry run checks, without a GPU, in well under a minute: the wheel lock resolves against the
# image's recorded package list (benchmarks/gpu_wheels_check.py, and .whl/ if present), pytest
# collects every parity selection, and every step's exact command parses and runs up to its
# measurement (zoo's own CLI with the measurement swapped for a tiny CPU one, the board read
# back; the training commands up to the Trainer; DDP with gloo; the step-ratio models on the CPU).
# Exit codes: 0 all steps passed (and, on a GPU, all targets met); 1 otherwise; 2 usage; 3 no
# CUDA device. The device tool's call: command "bash benchmarks/gpu_acceptance.sh", carry
# [".whl"], timeout_s 540 (README, section GPU).
set -uo pipefail  # no -e: a failed step must not stop the later ones

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${ZOO_GPU_PYTHON:-python3}
SITE=${ZOO_GPU_SITE:-/tmp/site}
BUDGET=${ZOO_GPU_BUDGET_S:-470}
ONLY=${ZOO_GPU_STEPS:-}
case "${ZOO_GPU_DRY_RUN:-0}" in 1|true|yes) DRY_RUN=1 ;; *) DRY_RUN=0 ;; esac
GRACE=15  # seconds kept back from each step: timeout's kill delay, the summary, the archive
OUT_ARG=""

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_acceptance.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --steps) [ $# -ge 2 ] || die "--steps needs a list"; ONLY=$2; shift ;;
    --steps=*) ONLY=${1#--steps=} ;;
    --budget) [ $# -ge 2 ] || die "--budget needs seconds"; BUDGET=$2; shift ;;
    --budget=*) BUDGET=${1#--budget=} ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$OUT_ARG" ] || die "one output folder only (got '$OUT_ARG' and '$1')"; OUT_ARG=$1 ;;
  esac
  shift
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || die "--budget takes whole seconds, got '$BUDGET'"

# --- what each step runs (the dry run checks exactly these) -------------------------------------

PARITY_ACTIVATIONS=(
  "tests/test_kernels.py::test_kernel_matches_reference_forward_and_backward"
  "tests/test_rational.py::test_kernel_matches_reference_forward_and_backward"
)
PARITY_QUANT=(
  "tests/test_quant_kernels.py::test_kernels_equal_the_reference_bitwise"
  "tests/test_quant_kernels.py::test_strides_alignment_and_rows_longer_than_the_registers"
  "tests/test_quant_kernels.py::test_dequantize_takes_the_references_codes_even_of_odd_groups"
  "tests/test_quant_kernels.py::test_nan_is_where_the_reference_puts_it"
)
PARITY_DATA_VAR=(
  "tests/test_datasets.py::test_shuffled_order_is_the_same_on_cpu_and_cuda"
  "tests/test_var_training.py::test_a_generator_trains_on_the_device_it_is_given"
)
BENCH_KERNELS=(bench kernels --write)                     # writes ./leaderboards/kernels.md
BENCH_QUANT=(bench quant --device cuda --write)            # writes ./leaderboards/quant-kernels.md
BENCH_KERNELS_COMPILE=(bench kernels --compile --write)
STEP_RATIO=(--device cuda)
# torch.compile of every activation's reference compiles one lambda's code object again and
# again (one closure per activation, grad and no-grad): past dynamo's recompile limit (8) the
# rest would run eagerly and the comparison would mean nothing. Raise it for this one process.
COMPILE_WRAPPER='import sys
import torch._dynamo
for key in ("recompile_limit", "cache_size_limit"):
    if hasattr(torch._dynamo.config, key):
        setattr(torch._dynamo.config, key, 4096)
if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
    torch._dynamo.config.accumulated_recompile_limit = 65536
from zoo.cli import main
sys.exit(main(sys.argv[1:]))'
SMOKE_ARCHS=(vit resnet kat gpt2 var)
SMOKE_vit=(train vit --device cuda --dataset digits --epochs 3 --train-subset 1024 --eval-subset 256 --batch-size 32 --no-progress)
SMOKE_resnet=(train resnet --device cuda --dataset digits --epochs 3 --train-subset 1024 --eval-subset 256 --batch-size 32 --no-progress)
SMOKE_kat=(train kat --device cuda --dataset digits --epochs 3 --train-subset 1024 --eval-subset 256 --batch-size 32 --no-progress)
SMOKE_gpt2=(train gpt2 --device cuda --dataset shakespeare --tokenizer byte --arch-param size=nano --block-size 128 --batch-size 32 --steps-per-epoch 25 --epochs 3 --no-progress)
SMOKE_var=(train var --device cuda --dataset digits --tokenizer "msvq:batch=64,codebook=32,latent=8,steps=150,width=16" --arch-param size=nano --epochs 3 --batch-size 64 --no-progress)

#       name                  kind       cap  min  function
STEPS=(
  "setup                  setup      75   20   step_setup"
  "parity-activations     parity     150  30   step_parity_activations"
  "parity-quant           parity     120  30   step_parity_quant"
  "parity-data-var        parity     120  30   step_parity_data_var"
  "ddp-nccl               parity     60   20   step_ddp"
  "bench-kernels          benchmark  150  45   step_bench_kernels"
  "bench-quant            benchmark  90   30   step_bench_quant"
  "step-ratio             benchmark  90   30   step_step_ratio"
  "bench-kernels-compile  benchmark  210  60   step_bench_kernels_compile"
  "smoke                  smoke      150  60   step_smoke"
)

for wanted in ${ONLY//,/ }; do  # a misspelt step would otherwise be skipped without a word
  known=0
  for entry in "${STEPS[@]}"; do [ "${entry%% *}" = "$wanted" ] && known=1; done
  [ "$known" = 1 ] || die "--steps: no step '$wanted' (steps: $(for e in "${STEPS[@]}"; do printf '%s ' "${e%% *}"; done))"
done

# --- the output folder --------------------------------------------------------------------------

if [ "$DRY_RUN" = 1 ]; then
  D=${OUT_ARG:-${OUT:-${TMPDIR:-/tmp}/zoo-gpu-acceptance-dry-run}}
else
  D=${OUT_ARG:-${OUT:-./gpu-acceptance-out}}
fi
mkdir -p "$D" || die "cannot create the output folder $D"
D=$(cd "$D" && pwd)
# Only what this script writes there is removed: a fresh run's files, not an old run's.
rm -rf -- "$D/detail" "$D/summary.json" "$D/summary.json.tmp" "$D/results.tar.gz" \
  "$D/kernels.md" "$D/quant-kernels.md" "$D/kernels-compile.md"
DETAIL=$D/detail
# Everything but the top level lies 3 folders down, where the device tool does not return it
# file by file (results.tar.gz holds it): the plan, the exact commands, the dry run's verdicts.
META=$DETAIL/run/meta
mkdir -p "$DETAIL/steps" "$META/checks"
HELPER=$REPO/benchmarks/gpu_acceptance_steps.py

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg \
  TOKENIZERS_PARALLELISM=false
if [ "$DRY_RUN" = 1 ]; then
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

now_s() { date +%s; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
json_str() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/ }; s=${s//$'\n'/ }; s=${s//$'\r'/ }
  printf '"%s"' "$s"
}
limit() { local t=$1; shift; timeout -s INT -k 10 "$t" "$@"; }
remaining() {  # seconds left of the current step's timeout (at least 1)
  local left=$(( STEP_END - $(now_s) ))
  [ "$left" -gt 0 ] && echo "$left" || echo 1
}
note() { printf '%s\n' "$*" > "$STEP_DIR/note.txt"; }

START=$(now_s)
DEADLINE=$(( START + BUDGET ))

# --- the Python half (summary.json, junit counts, the device, DDP, the smoke verdicts, the dry
# run's checks, the last word) is benchmarks/gpu_acceptance_steps.py; a copy of it is kept with
# the results at each start.

keep_helper() { cp "$HELPER" "$META/gpu_acceptance_helper.py"; }

# --- steps: each gets its folder and its timeout, returns 0 passed, 124/137 timed out ------------

dry_result() {  # the dry check's verdict on this step
  local file=$META/checks/$1.txt verdict message
  if [ ! -f "$file" ]; then
    note "the dry check did not report on this step (see the setup step's log)"
    return 1
  fi
  IFS=$'\t' read -r verdict message < "$file"
  [ -f "$META/checks/$1.count" ] && message="$(cat "$META/checks/$1.count") tests collected${message:+; $message}"
  note "${message:-command parses and runs up to its measurement}"
  [ "$verdict" = ok ]
}

step_setup() {
  local dir=$1 t=$2 rc=0
  echo "repo: $REPO"; echo "output: $D"; echo "python: $("$PY" -V 2>&1) ($(command -v "$PY"))"
  local tool
  for tool in timeout tar date awk "$PY"; do
    command -v "$tool" >/dev/null || { note "missing tool: $tool"; return 1; }
  done
  "$PY" -m pip --version || { note "pip is missing: the wheels cannot be installed"; return 1; }
  if [ "$DRY_RUN" = 1 ]; then
    "$PY" "$REPO/benchmarks/gpu_wheels_check.py" --folder "$REPO/.whl" --json "$dir/wheels.json" \
      --verbose || { note "$(tail -n 1 "$dir/log.txt")"; rc=1; }
    limit "$(remaining)" "$PY" "$HELPER" dry-check "$D" "$REPO"
    local check=$?
    if [ "$check" -gt 1 ]; then
      note "the dry check itself failed (exit $check)"; return "$check"
    fi
    [ "$rc" = 0 ] && note "wheels resolve against the image list; dry check ran"
    return "$rc"
  fi
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
      --format=csv > "$dir/nvidia-smi.csv" 2>&1 || true
  fi
  local wheels=("$REPO"/.whl/*.whl)
  if [ -e "${wheels[0]}" ]; then
    echo "installing ${#wheels[@]} wheels into $SITE"
    limit "$(remaining)" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$SITE" "${wheels[@]}" || { note "pip install of .whl/ failed"; return 1; }
  else
    echo "no wheels in $REPO/.whl: nothing installed (bash benchmarks/gpu_wheels.sh, carry .whl)"
  fi
  "$PY" -m pip list --format=freeze > "$dir/pip-freeze.txt" 2>/dev/null || true
  "$PY" "$REPO/benchmarks/gpu_wheels_check.py" --installed --json "$dir/wheels.json" --verbose
  local wheels_rc=$?
  limit "$(remaining)" "$PY" "$HELPER" device "$dir/device.json"
  local device_rc=$?
  if [ "$device_rc" = 3 ]; then note "no CUDA device: nothing to accept"; return 3; fi
  [ "$device_rc" = 0 ] || { note "could not read the device (exit $device_rc)"; return 1; }
  if [ "$wheels_rc" != 0 ]; then
    note "the carried wheels do not resolve here (detail/steps/00-setup/wheels.json)"; return 1
  fi
  note "$(tail -n 1 "$dir/log.txt")"  # the device helper's one-line description
}

run_pytest() {  # DIR TIMEOUT NODEID...
  local dir=$1 t=$2 rc
  shift 2
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  # shellcheck disable=SC2086  # ZOO_GPU_PYTEST_ARGS is a list of words
  (cd "$REPO" && limit "$t" "$PY" -m pytest -p no:cacheprovider -q \
    --junitxml="$dir/junit.xml" ${ZOO_GPU_PYTEST_ARGS:-} "$@")
  rc=$?
  "$PY" "$HELPER" junit "$dir/junit.xml" > "$dir/junit.txt"
  local junit_rc=$?
  cat "$dir/junit.txt"
  note "$(head -n 1 "$dir/junit.txt")"
  case "$rc" in 124|137) return "$rc" ;; esac
  [ "$rc" = 0 ] && [ "$junit_rc" = 0 ]  # a skip counts as a failure: on a GPU nothing skips
}

step_parity_activations() { run_pytest "$1" "$2" "${PARITY_ACTIVATIONS[@]}"; }
step_parity_quant() { run_pytest "$1" "$2" "${PARITY_QUANT[@]}"; }
step_parity_data_var() { run_pytest "$1" "$2" "${PARITY_DATA_VAR[@]}"; }

step_ddp() {
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  limit "$2" "$PY" "$HELPER" ddp "$1/ddp.json" --device cuda
}

run_bench() {  # DIR TIMEOUT BOARD COPY-AS COMMAND...: run COMMAND in DIR, keep DIR/leaderboards/BOARD
  local dir=$1 t=$2 board=$3 copy=$4 rc
  shift 4
  (cd "$dir" && limit "$t" "$@")
  rc=$?
  if [ -f "$dir/leaderboards/$board" ]; then
    cp "$dir/leaderboards/$board" "$D/$copy"
    note "$(grep -m1 '^\*\*Measured on' "$dir/leaderboards/$board")"
  else
    note "no board written (exit $rc)"
    [ "$rc" = 0 ] && rc=1
  fi
  return "$rc"
}

step_bench_kernels() {
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  run_bench "$1" "$2" kernels.md kernels.md "$PY" -m zoo "${BENCH_KERNELS[@]}"
}

step_bench_quant() {
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  run_bench "$1" "$2" quant-kernels.md quant-kernels.md "$PY" -m zoo "${BENCH_QUANT[@]}"
}

step_bench_kernels_compile() {
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  run_bench "$1" "$2" kernels.md kernels-compile.md "$PY" -c "$COMPILE_WRAPPER" \
    "${BENCH_KERNELS_COMPILE[@]}"
}

step_step_ratio() {
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  limit "$2" "$PY" "$REPO/benchmarks/gpu_step_ratio.py" "${STEP_RATIO[@]}" \
    --json "$1/step-ratio.json" || return
  note "$(grep -m1 'kat/vit' "$1/log.txt")"  # the headline shape's line
}

smoke_one() {  # ARCH DIR DEADLINE: the same training command three times
  local arch=$1 dir=$2 deadline=$3 pid killed=0 rc
  local -n argv="SMOKE_$arch"
  local runs=$dir/runs/$arch
  mkdir -p "$runs"
  local cmd=("$PY" -m zoo "${argv[@]}" --out "$runs")
  export OMP_NUM_THREADS=2  # five runs share the cores
  printf '%q ' "${cmd[@]}" > "$runs/command.txt"
  # 1: trains until its first checkpoint exists, then is killed as hard as a crash
  "${cmd[@]}" > "$runs/1-interrupted.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if compgen -G "$runs/*/checkpoint.json" >/dev/null \
        && ! compgen -G "$runs/*/result.json" >/dev/null; then
      kill -KILL "$pid" 2>/dev/null && killed=1
      break
    fi
    if [ "$(now_s)" -ge "$deadline" ]; then  # (a background job ignores SIGINT)
      kill -TERM "$pid" 2>/dev/null; sleep 5; kill -KILL "$pid" 2>/dev/null
      break
    fi
    sleep 0.05
  done
  wait "$pid"; rc=$?
  echo "run1_exit=$rc" >> "$runs/smoke.txt"
  echo "killed_after_checkpoint=$killed" >> "$runs/smoke.txt"
  # 2: the same command resumes from that checkpoint and completes
  local left=$(( deadline - $(now_s) ))
  [ "$left" -gt 5 ] || { echo "run2_exit=out-of-time" >> "$runs/smoke.txt"; return 1; }
  timeout -s TERM -k 10 "$left" "${cmd[@]}" > "$runs/2-resume.log" 2>&1
  echo "run2_exit=$?" >> "$runs/smoke.txt"
  # 3: and once more: already completed, nothing trained
  left=$(( deadline - $(now_s) ))
  [ "$left" -gt 5 ] || { echo "run3_exit=out-of-time" >> "$runs/smoke.txt"; return 1; }
  timeout -s TERM -k 10 "$left" "${cmd[@]}" > "$runs/3-completed.log" 2>&1
  echo "run3_exit=$?" >> "$runs/smoke.txt"
}

step_smoke() {
  [ "$DRY_RUN" = 1 ] && { dry_result "$STEP_NAME"; return; }
  local dir=$1 t=$2 arch pids=()
  local deadline=$(( $(now_s) + t - 5 ))
  for arch in "${SMOKE_ARCHS[@]}"; do
    smoke_one "$arch" "$dir" "$deadline" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  "$PY" "$HELPER" smoke "$dir" "${SMOKE_ARCHS[@]}" > "$dir/verdict.txt"
  local rc=$?
  cat "$dir/verdict.txt"
  note "$(grep -c ': ok;' "$dir/verdict.txt") of ${#SMOKE_ARCHS[@]} archs ok"
  [ "$(now_s)" -lt "$(( deadline + 5 ))" ] || return 124
  return "$rc"
}

# --- the runner ---------------------------------------------------------------------------------

write_step() {  # DIR NAME KIND STATUS [EXIT DURATION TIMEOUT]
  local dir=$1 name=$2 kind=$3 status=$4 rc=${5:-null} duration=${6:-null} t=${7:-null} text=""
  [ -f "$dir/note.txt" ] && text=$(head -n 1 "$dir/note.txt")
  local extra=""
  [ "$name" = smoke ] && extra=", \"archs\": $(json_str "$(IFS=,; echo "${SMOKE_ARCHS[*]}")")"
  printf '{"name": %s, "kind": %s, "status": %s, "exit_code": %s, "duration_s": %s, "timeout_s": %s, "note": %s%s}\n' \
    "$(json_str "$name")" "$(json_str "$kind")" "$(json_str "$status")" "$rc" "$duration" "$t" \
    "$(json_str "$text")" "$extra" > "$dir/step.json"
}

refresh() {  # summary.json and results.tar.gz from what is on disk now
  "$PY" "$HELPER" summary "$D" "$@" || echo "gpu_acceptance.sh: the summary could not be written" >&2
  (cd "$D" && find . -path ./results.tar.gz -prune -o -type f \( -name '*.json' -o -name '*.jsonl' \
      -o -name '*.md' -o -name '*.txt' -o -name '*.xml' -o -name '*.csv' -o -name '*.log' \
      -o -name '*.tsv' \) -size -4M -print | LC_ALL=C sort \
    | tar -czf results.tar.gz.tmp -T - && mv -f results.tar.gz.tmp results.tar.gz) \
    || echo "gpu_acceptance.sh: results.tar.gz could not be written" >&2
}

selected() {  # is step $1 in --steps (setup always is)?
  [ -z "$ONLY" ] || [ "$1" = setup ] || [[ ",${ONLY// /}," == *",$1,"* ]]
}

ABORT=""
CURRENT=""
on_signal() {
  echo "gpu_acceptance.sh: interrupted${CURRENT:+ during $CURRENT}" >&2
  [ -n "$CURRENT" ] && write_step "$STEP_DIR" "$CURRENT" "$STEP_KIND" interrupted
  refresh
  exit 130
}
trap on_signal INT TERM

run_step() {  # INDEX NAME KIND CAP MIN FUNCTION
  local index=$1 name=$2 kind=$3 cap=$4 min=$5 fn=$6
  STEP_DIR=$DETAIL/steps/$(printf '%02d' "$index")-$name
  STEP_NAME=$name STEP_KIND=$kind
  mkdir -p "$STEP_DIR"
  if [ -n "$ABORT" ]; then
    note "$ABORT"; write_step "$STEP_DIR" "$name" "$kind" skipped; return
  fi
  if ! selected "$name"; then
    note "not in --steps"; write_step "$STEP_DIR" "$name" "$kind" skipped; return
  fi
  local left=$(( DEADLINE - $(now_s) - GRACE )) t=$cap
  [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt "$min" ]; then
    note "no time left: ${left}s of the ${BUDGET}s budget, the step needs ${min}s"
    write_step "$STEP_DIR" "$name" "$kind" skipped
    refresh
    printf '[%4ds] %-22s skipped (no time left)\n' "$(( $(now_s) - START ))" "$name"
    return
  fi
  write_step "$STEP_DIR" "$name" "$kind" running null null "$t"
  CURRENT=$name
  STEP_END=$(( $(now_s) + t ))
  local t0 rc status
  t0=$(now_ms)
  "$fn" "$STEP_DIR" "$t" > "$STEP_DIR/log.txt" 2>&1
  rc=$?
  CURRENT=""
  local duration
  duration=$(awk -v ms="$(( $(now_ms) - t0 ))" 'BEGIN { printf "%.1f", ms / 1000 }')
  case "$rc" in
    0) status=$([ "$DRY_RUN" = 1 ] && echo checked || echo passed) ;;
    124|137) status=timeout; [ -f "$STEP_DIR/note.txt" ] || note "timed out after ${t}s" ;;
    *) status=failed ;;
  esac
  if [ "$rc" != 0 ] && [ ! -s "$STEP_DIR/note.txt" ]; then  # the log's last words say why
    note "exit $rc: $(grep -v '^[[:space:]]*$' "$STEP_DIR/log.txt" | tail -n 1 | cut -c1-300)"
  fi
  if [ "$name" = setup ] && [ "$rc" = 3 ]; then
    ABORT="not run: the setup step found no CUDA device"
  fi
  write_step "$STEP_DIR" "$name" "$kind" "$status" "$rc" "$duration" "$t"
  refresh
  printf '[%4ds] %-22s %-9s %6.1fs  %s\n' "$(( $(now_s) - START ))" "$name" "$status" \
    "$duration" "$(head -n 1 "$STEP_DIR/note.txt" 2>/dev/null | cut -c1-110)"
}

# --- main ---------------------------------------------------------------------------------------

keep_helper
if [ "$DRY_RUN" = 1 ] && [ -n "$ONLY" ]; then
  echo "gpu_acceptance.sh: --steps is ignored in the dry run: every step is checked"
  ONLY=""
fi
{
  index=0
  for entry in "${STEPS[@]}"; do
    read -r name kind cap _ _ <<<"$entry"
    printf '%s\t%s\t%s\t%s\n' "$index" "$name" "$kind" "$cap"
    index=$((index + 1))
  done
} > "$META/plan.tsv"
{  # the exact commands, for the dry run's checks
  tsv() { local IFS=$'\t'; echo "$*"; }
  tsv parity-activations pytest "${PARITY_ACTIVATIONS[@]}"
  tsv parity-quant pytest "${PARITY_QUANT[@]}"
  tsv parity-data-var pytest "${PARITY_DATA_VAR[@]}"
  tsv ddp-nccl ddp
  tsv bench-kernels zoo "${BENCH_KERNELS[@]}"
  tsv bench-quant zoo "${BENCH_QUANT[@]}"
  tsv step-ratio ratio "${STEP_RATIO[@]}"
  tsv bench-kernels-compile zoo-compile "${BENCH_KERNELS_COMPILE[@]}"
  for arch in "${SMOKE_ARCHS[@]}"; do
    declare -n smoke_argv="SMOKE_$arch"
    tsv smoke train "${smoke_argv[@]}" --out "$DETAIL/steps/smoke-runs/$arch"
    unset -n smoke_argv
  done
} > "$META/spec.tsv"
commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
cat > "$META/run.json" <<EOF
{"mode": $(json_str "$([ "$DRY_RUN" = 1 ] && echo dry-run || echo run)"), "started_at": $(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)"), "budget_s": $BUDGET, "steps_selected": $(json_str "${ONLY:-all}"), "output": $(json_str "$D"), "repo_commit": $(json_str "${commit:-unknown}"), "host": $(json_str "$(hostname 2>/dev/null || echo unknown)"), "python": $(json_str "$PY")}
EOF
refresh
echo "gpu acceptance$([ "$DRY_RUN" = 1 ] && echo ' (dry run)'): output in $D, budget ${BUDGET}s"

index=0
for entry in "${STEPS[@]}"; do
  read -r name kind cap min fn <<<"$entry"
  run_step "$index" "$name" "$kind" "$cap" "$min" "$fn"
  index=$((index + 1))
done

refresh --final --print
echo "total $(( $(now_s) - START ))s; summary: $D/summary.json"
if [ -n "$ABORT" ]; then exit 3; fi
ok=$("$PY" "$HELPER" verdict "$D/summary.json" 2>&1)
if [ "$ok" = ok ]; then
  echo "gpu_acceptance.sh$([ "$DRY_RUN" = 1 ] && echo ' --dry-run'): ok"
  exit 0
fi
echo "gpu_acceptance.sh$([ "$DRY_RUN" = 1 ] && echo ' --dry-run'): $ok" >&2
exit 1
