#!/usr/bin/env bash
# One prepared run for a lent GPU machine: the GPU kernel tests and the benchmarks, results under $OUT,
# a short table printed last. Installs nothing from the network.
#
#   bash bench/device_run.sh                      # every section in DEFAULT_SECTIONS, about 11 minutes at most (SECTIONS=... for less)
#   SECTIONS="kernel_tests" bash bench/device_run.sh
#
# Writes to $OUT (default: a new temporary folder): gpu.txt, versions.txt, <section>.log, kernel_tests.xml,
# kernel_bench.json (pytest-benchmark), kernel_bench_ratios.txt/.json (the ratio table), summary.txt.
#
# Adding a section (later issues: training step, loaders): write section_NAME() below; it runs its command
# with `run_with_timeout NAME SECONDS cmd...` (log in $OUT/NAME.log) and adds lines to the final table
# with `summary ...`; then add NAME to DEFAULT_SECTIONS. Keep the sum of the timeouts near 11 minutes (a 15-minute device budget, start included).
set -uo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEFAULT_SECTIONS="kernel_tests kernel_bench step_tests step_bench train_smoke loader_bench ddp_smoke"
SECTIONS=${SECTIONS:-$DEFAULT_SECTIONS}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
STATUS=0

log() { echo "[device_run $(date +%H:%M:%S)] $*"; }
summary() { echo "$*" >> "$SUMMARY"; }
have_module() { "$PY" -c "import $1" > /dev/null 2>&1; }

# run_with_timeout NAME SECONDS cmd...: SIGINT at the limit (pytest then still writes its summary and
# JSON), SIGKILL 20 s later; output in $OUT/NAME.log; the exit status is kept for the final status.
run_with_timeout() {
    local name=$1 seconds=$2
    shift 2
    log "$name: up to ${seconds}s: $*"
    timeout -s INT -k 20 "$seconds" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    [ "$rc" -ne 0 ] && STATUS=$rc
    log "$name: exit $rc ($(tail -n 1 "$OUT/$name.log"))"
    return "$rc"
}

setup() {
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
    else
        echo "no nvidia-smi" > "$OUT/gpu.txt"
    fi
    "$PY" -c 'import torch, triton; print("torch", torch.__version__, "| triton", triton.__version__, "| cuda",
torch.cuda.is_available(), "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' \
        > "$OUT/versions.txt" 2>&1
    cat "$OUT/gpu.txt" "$OUT/versions.txt"
    # fastgradmix.kernels lives in ./kernels (a package-dir mapping), so a plain PYTHONPATH=. is not enough.
    # An offline editable install maps it; failing that, a folder of symlinks laid out as the package.
    # FGM_NO_INSTALL=1 skips the install (read-only site-packages, or to leave the machine's Python alone).
    SHADOW=""
    if [ -n "${FGM_NO_INSTALL:-}" ] || \
        ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/pip_install.log" 2>&1; then
        SHADOW=$(mktemp -d)
        mkdir "$SHADOW/fastgradmix"
        for entry in fastgradmix/*; do ln -s "$PWD/$entry" "$SHADOW/fastgradmix/"; done
        ln -s "$PWD/kernels" "$SHADOW/fastgradmix/kernels"
        log "no editable install (FGM_NO_INSTALL, or see pip_install.log): fastgradmix from symlinks in $SHADOW"
    fi
    # pytest, with the symlink folder ahead of the working directory on sys.path when there is one
    PYTEST=("$PY" -c 'import sys; first = sys.argv.pop(1); first and sys.path.insert(0, first); import pytest
sys.exit(pytest.main(sys.argv[1:]))' "$SHADOW")
    if ! have_module pytest; then
        log "pytest is not installed here: nothing can run (pip install pytest pytest-benchmark from a wheel)"
        summary "pytest missing: no section ran"
        return 1
    fi
    have_module pytest_benchmark || log "pytest-benchmark is missing: bench/conftest.py times the benchmarks itself"
}

section_kernel_tests() {
    local workers=()
    have_module xdist && workers=(-n 4)  # Triton compiles each kernel variant once per process: spread them
    run_with_timeout kernel_tests "${KERNEL_TESTS_TIMEOUT:-140}" "${PYTEST[@]}" tests/test_kernels_layercam.py \
        tests/test_kernels_window_argmax.py tests/test_kernels_paste.py tests/test_kernels_gradmix.py \
        -q -p no:cacheprovider -rs "${workers[@]}" --junitxml="$OUT/kernel_tests.xml"
    summary "kernel tests (GPU): $(tail -n 1 "$OUT/kernel_tests.log")"
}

section_kernel_bench() {
    local options=(-q -p no:cacheprovider)
    have_module pytest_benchmark && options+=(--benchmark-json="$OUT/kernel_bench.json" --benchmark-max-time=0.5)
    FGM_BENCH_SUMMARY="$OUT/kernel_bench_ratios.txt" run_with_timeout kernel_bench "${KERNEL_BENCH_TIMEOUT:-100}" \
        "${PYTEST[@]}" bench/bench_kernels.py bench/bench_augmentation.py "${options[@]}"
    summary "kernel + augmentation benchmarks: $(tail -n 1 "$OUT/kernel_bench.log")"
}

# ---- issue 6: the fast training step (tests/test_step_fast.py GPU tests, bench/bench_step.py) ----

section_step_tests() {
    # the step under torch.cuda.set_sync_debug_mode("error"), and CUDA memory flat across steps
    run_with_timeout step_tests "${STEP_TESTS_TIMEOUT:-50}" "${PYTEST[@]}" tests/test_step_fast.py -m gpu \
        -q -p no:cacheprovider -rs --junitxml="$OUT/step_tests.xml"
    summary "training step tests (GPU): $(tail -n 1 "$OUT/step_tests.log")"
}

section_step_bench() {
    # plain vs GradMix vs published-code step at TinyImageNet size (b256, 64 px, ResNet-18, bf16, channels_last)
    local options=(-q -p no:cacheprovider -s)
    have_module pytest_benchmark && options+=(--benchmark-json="$OUT/step_bench.json")
    FGM_BENCH_SUMMARY="$OUT/step_bench_ratios.txt" run_with_timeout step_bench "${STEP_BENCH_TIMEOUT:-100}" \
        "${PYTEST[@]}" bench/bench_step.py "${options[@]}"
    summary "training step benchmark: $(grep -h 'gradmix / plain =' "$OUT/step_bench.log" | tail -n 1)"
    summary "training step benchmark: $(tail -n 1 "$OUT/step_bench.log")"
}

# ---- the whole trainer on the GPU: TinyImageNet split 0, a short run with the defaults of a real one ----

section_train_smoke() {
    # needs the split-0 and val archives copied into device_data/ (git-ignored) and carried with the run
    local data=${FGM_DEVICE_DATA:-device_data}
    if [ ! -f "$data/tinyimagenet-val.tar.gz" ] || [ ! -f "$data/tinyimagenet-train-split0.tar.gz" ]; then
        log "train_smoke: no TinyImageNet archives in $data: skipped"
        summary "train smoke: skipped (no $data/tinyimagenet-{val,train-split0}.tar.gz)"
        return 0
    fi
    local root
    root=$(mktemp -d)
    tar -xzf "$data/tinyimagenet-val.tar.gz" -C "$root" && tar -xzf "$data/tinyimagenet-train-split0.tar.gz" -C "$root"
    PYTHONPATH="$SHADOW${SHADOW:+:}${PYTHONPATH:-}" run_with_timeout train_smoke "${TRAIN_SMOKE_TIMEOUT:-80}" \
        "$PY" -m fastgradmix.train --protocol tinyimagenet --split 0 --data-root "$root" --epochs 2 --amp \
        --channels-last --no-progress --log-every 10 --out "$OUT/train_smoke_run"
    summary "train smoke (tinyimagenet split 0, ResNet-18, 64 px, batch 256, 2 epochs, bf16, channels_last):"
    summary "$("$PY" - "$OUT/train_smoke_run" <<'PYEOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
try:
    results = json.loads((run / "results.json").read_text())
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
except OSError as err:
    print(f"  no results ({err})")
    sys.exit(0)
last = logs[-1]
print(f"  auroc {results['auroc']:.4f}  closed_acc {results['closed_acc']:.4f}  images/s {results['images_per_s']:.0f}"
      f"  last log: step_ms {last.get('step_ms', float('nan')):.1f}  augment_share {last.get('augment_share', float('nan')):.4f}"
      f"  peak_memory_mib {last.get('peak_memory_mib', float('nan')):.0f}")
PYEOF
)"
}

# ---- issue 5: the input pipelines (bench/bench_loaders.py; tests/test_loaders*.py by name: loader_tests) ----

section_loader_bench() {
    # two-view images/s at 32 and 64 px, batch 256: the device-resident loader (dataset on the GPU) against the
    # torchvision DataLoader with LOADER_BENCH_WORKERS workers, batches moved to the GPU; DALI is not installed
    # on the lent machines, so its rows skip (-rs lists why)
    local options=(-q -p no:cacheprovider -s -rs)
    have_module pytest_benchmark && options+=(--benchmark-json="$OUT/loader_bench.json")
    FGM_BENCH_WORKERS="${LOADER_BENCH_WORKERS:-8}" FGM_BENCH_SUMMARY="$OUT/loader_bench_ratios.txt" \
        run_with_timeout loader_bench "${LOADER_BENCH_TIMEOUT:-90}" "${PYTEST[@]}" bench/bench_loaders.py "${options[@]}"
    summary "loader benchmark: $(tail -n 1 "$OUT/loader_bench.log")"
}

section_loader_tests() {
    # not in DEFAULT_SECTIONS: the loader tests on this machine (the device loader on the GPU without a sync,
    # the trainer end to end with --loader torch and device on the GPU; DALI's tests skip without DALI)
    run_with_timeout loader_tests "${LOADER_TESTS_TIMEOUT:-120}" "${PYTEST[@]}" tests/test_loaders.py \
        tests/test_loaders_train.py -q -p no:cacheprovider -rs --junitxml="$OUT/loader_tests.xml"
    summary "loader tests: $(tail -n 1 "$OUT/loader_tests.log")"
}

# ---- issue 7: torchrun on the GPU(s): NCCL, cuda:LOCAL_RANK, DDP with device_ids, rank-0 I/O, resume ----

section_ddp_smoke() {
    # one process per visible GPU (one on a single-GPU machine: still the NCCL process group and DDP path);
    # digits, 2 epochs, then --resume to 3 epochs. Checks one results.json and continued metrics.
    local gpus run="$OUT/ddp_smoke_run"
    gpus=$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')
    PYTHONPATH="$SHADOW${SHADOW:+:}${PYTHONPATH:-}" run_with_timeout ddp_smoke "${DDP_SMOKE_TIMEOUT:-90}" bash -c "
        $PY -m torch.distributed.run --standalone --nproc_per_node=$gpus -m fastgradmix.train --device cuda \
            --epochs 2 --no-progress --out '$run' &&
        $PY -m torch.distributed.run --standalone --nproc_per_node=$gpus -m fastgradmix.train --device cuda \
            --epochs 3 --resume --no-progress --out '$run'"
    summary "ddp smoke (torchrun --nproc_per_node=$gpus, nccl, digits, 2 epochs + resume to 3):"
    summary "$("$PY" - "$run" <<'PYEOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
try:
    results = json.loads((run / "results.json").read_text())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
except OSError as err:
    print(f"  no results ({err})")
    sys.exit(0)
print(f"  epochs {results['epochs']}  auroc {results['auroc']:.4f}  closed_acc {results['closed_acc']:.4f}"
      f"  last step {steps[-1]}  files {sorted(p.name for p in run.iterdir())}")
PYEOF
)"
}

section_replication() {
    # not in DEFAULT_SECTIONS (it takes the whole budget): SECTIONS=replication bash bench/device_run.sh.
    # CIFAR-10 split 0, --aug gradmix / --aug none / --method ce, the same epochs, one table (bench/replicate.py).
    # Data: FGM_DATA_ROOT, else unpacked from ./shared/data or ../shared/data into $OUT/data.
    local data=${FGM_DATA_ROOT:-$OUT/data} source=""
    for candidate in shared/data ../shared/data; do [ -f "$candidate/unpack.sh" ] && source=$candidate && break; done
    local unpack=()
    [ -z "${FGM_DATA_ROOT:-}" ] && [ -n "$source" ] && unpack=(--unpack-from "$source")
    run_with_timeout replication "${REPLICATION_TIMEOUT:-540}" "$PY" bench/replicate.py --preset gpu \
        --data-root "$data" "${unpack[@]}" --out "$OUT/replication" ${REPLICATION_EPOCHS:+--epochs "$REPLICATION_EPOCHS"}
    [ -f "$OUT/replication/table.md" ] && summary "$(cat "$OUT/replication/table.md")"
}

if setup; then
    for section in $SECTIONS; do
        if declare -F "section_$section" > /dev/null; then
            "section_$section"
        else
            log "unknown section $section (known: $DEFAULT_SECTIONS)"
            STATUS=2
        fi
    done
else
    STATUS=3
fi

echo
echo "==================== device_run summary ($(cat "$OUT/gpu.txt" 2>/dev/null | head -n 1)) ===================="
cat "$OUT/versions.txt" "$SUMMARY"
for table in "$OUT"/*_ratios.txt; do
    [ -f "$table" ] && { echo; cat "$table"; }
done
echo "results: $OUT"
exit "$STATUS"
