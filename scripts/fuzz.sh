#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS_PER_TARGET each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 s, all targets
#
# - Installs what it needs when missing: the nightly toolchain (rustup) and
#   cargo-fuzz (cargo install). A C/C++ compiler must be present (libFuzzer
#   and SQLite are built from source); `build-essential` on Debian.
# - Builds all targets once, then runs them one after another. Each run
#   starts by replaying the seed corpus (fuzz/corpus/<target>) and every
#   kept crasher (sync-core/tests/fuzz-crashers/<target>), so a regression
#   fails at once. New corpus entries go to fuzz/work/corpus/<target>
#   (ignored by git, kept between runs, so long runs build on each other).
# - Any crash, OOM, timeout or leak fails the script (exit 1, after the other
#   targets have run) and its input is copied to
#   sync-core/tests/fuzz-crashers/<target>/, where
#   sync-core/tests/fuzz_regressions.rs replays it. Commit it with the fix.
# - Appends one line per run to fuzz/work/runs.tsv: UTC date, target,
#   seconds asked, CPU seconds used, executions, result. FUZZING.md's table
#   of CPU time comes from there.
#
# Environment: FUZZ_TIMEOUT (seconds per input, default 60), FUZZ_RSS_MB
# (memory limit, also the largest single allocation, default 2048),
# FUZZ_MAX_LEN (longest generated input, default 4096; longer seeds such as
# the 17 KiB DEFLATE bombs are cut to it while fuzzing, and the regression
# tests replay them whole), FUZZ_SANITIZER (address or none, default
# address), FUZZ_SEED (libFuzzer's -seed, for a repeatable run such as the
# test command's smoke run; default: random), FUZZ_TOLERATE_AUTOMERGE_PANICS (set: a panic inside automerge
# that guard::catch_automerge catches is printed once and tolerated, so a
# known automerge bug does not stop the run; logged as "ok(tolerant)").
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-20}
shift || true
all_targets=(frame_to_message sync_into_document stored_bytes token_and_first_message)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
timeout_s=${FUZZ_TIMEOUT:-60}
rss_mb=${FUZZ_RSS_MB:-2048}
max_len=${FUZZ_MAX_LEN:-4096}
sanitizer=${FUZZ_SANITIZER:-address}
cargo_fuzz_version=0.13.2

case $seconds in '' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac
for t in "${targets[@]}"; do
    case " ${all_targets[*]} " in *" $t "*) ;; *)
        echo "unknown target $t (targets: ${all_targets[*]})" >&2
        exit 2
        ;;
    esac
done

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "== installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --version "$cargo_fuzz_version"
fi

echo "== building the fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build -O --sanitizer "$sanitizer"

mkdir -p fuzz/work
log=fuzz/work/runs.tsv
[ -f "$log" ] || printf 'date\ttarget\tseconds\tcpu_seconds\texecs\tresult\n' >"$log"

failed=()
for t in "${targets[@]}"; do
    work=fuzz/work/corpus/$t
    artifacts=fuzz/artifacts/$t
    crashers=sync-core/tests/fuzz-crashers/$t
    mkdir -p "$work"
    rm -rf "$artifacts"
    mkdir -p "$artifacts"
    corpora=("$work" "fuzz/corpus/$t")
    [ -d "$crashers" ] && corpora+=("$crashers")
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
    [ -n "${FUZZ_SEED:-}" ] && dict+=("-seed=$FUZZ_SEED")

    echo "== $t: ${seconds}s"
    out=fuzz/work/$t.log
    start_cpu=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
    set +e
    cargo +nightly fuzz run -O --sanitizer "$sanitizer" "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_mb" \
        -max_len="$max_len" -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$out" | grep -E '^(#[0-9]+\s+(INITED|DONE)|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written|stat::number_of_executed_units|Done [0-9]+ runs)'
    status=${PIPESTATUS[0]}
    set -e
    # Children's CPU time (utime+stime of waited-for children, in ticks).
    end_cpu=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
    ticks=$(getconf CLK_TCK)
    cpu=$(( (end_cpu - start_cpu) / ticks ))
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$out" | grep -oE '[0-9]+$' || echo 0)

    found=0
    for f in "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-* "$artifacts"/leak-*; do
        [ -e "$f" ] || continue
        case $(basename "$f") in timeout-*)
            # libFuzzer's timeout is wall-clock time: a machine that stalls
            # (CPU starvation, another process's OOM) fakes one. Keep it
            # only if it times out again on its own.
            if cargo +nightly fuzz run -O --sanitizer "$sanitizer" "$t" "$f" -- \
                -timeout="$timeout_s" -rss_limit_mb="$rss_mb" >"$out.recheck" 2>&1; then
                mkdir -p fuzz/work/flaky
                cp "$f" fuzz/work/flaky/
                echo "?? $t: $(basename "$f") timed out once but not again (machine stall?); kept in fuzz/work/flaky/"
                continue
            fi
            ;;
        esac
        mkdir -p "$crashers"
        cp "$f" "$crashers/"
        echo "!! $t: kept $crashers/$(basename "$f")"
        found=1
    done
    if [ "$status" -ne 0 ] && [ "$found" -eq 0 ] && ls "$artifacts"/timeout-* >/dev/null 2>&1; then
        # The only failure was a timeout that did not reproduce.
        status=0
    fi
    if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
        result="FAILED(exit $status)"
        failed+=("$t")
        echo "!! $t failed (exit $status); the log is $out"
    else
        result=ok
        [ -n "${FUZZ_TOLERATE_AUTOMERGE_PANICS:-}" ] && result="ok(tolerant)"
    fi
    grep -hE '^(known|tolerated) automerge panic' "$out" | sort -u | sed "s/^/?? $t: /" || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$t" "$seconds" "$cpu" "$execs" "$result" >>"$log"
    echo "== $t: $result, ${cpu}s CPU, $execs executions"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    echo "replay: cargo +nightly fuzz run -O TARGET sync-core/tests/fuzz-crashers/TARGET/FILE" >&2
    exit 1
fi
echo "== all targets ran without a crash"
