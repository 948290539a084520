#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets for a bounded time each:
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# Installs cargo-fuzz if it is missing, builds all targets once, then runs
# each on a copy of its checked-in seeds (fuzz/corpus/<target>), so what a
# run discovers goes to a temporary directory and the checkout is left as
# it was. Exits non-zero if any target crashed (a panic, a failed
# assertion, a sanitizer report, a timeout or running out of memory),
# after printing the input that did it and the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-30}
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov's -Cpasses);
# the toolchain here is stable, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
# AddressSanitizer works with the stable toolchain's runtime here;
# FUZZ_SANITIZER=none builds without it (faster, panics still found).
sanitizer=${FUZZ_SANITIZER:-address}
# cargo-fuzz's default is one codegen unit per crate (best code, slowest
# build); with two cores 16 builds much sooner. opt-level is in Cargo.toml.
flags=(--sanitizer "$sanitizer" --codegen-units 16)

# libfuzzer-sys compiles libFuzzer itself (C++).
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz: installing g++ for libFuzzer"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    nice -n 19 cargo install cargo-fuzz --locked
fi

# The project's crates build with the versions the workspace locks: a
# copy of its Cargo.lock, to which cargo adds libFuzzer's few crates
# (fuzz/Cargo.lock is not checked in).
cp ../Cargo.lock Cargo.lock

start=$(date +%s)
echo "fuzz: building the targets (sanitizer: $sanitizer)"
nice -n 19 cargo fuzz build "${flags[@]}"
echo "fuzz: built in $(($(date +%s) - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p artifacts

failed=()
for target in $(cargo fuzz list); do
    corpus=$work/corpus/$target
    mkdir -p "$corpus" "artifacts/$target"
    if compgen -G "corpus/$target/*" >/dev/null; then
        cp corpus/"$target"/* "$corpus"/
    fi
    log=$work/$target.log
    echo "fuzz: $target for $secs s"
    # The build above is up to date: this only runs it.
    if nice -n 19 cargo fuzz run "${flags[@]}" "$target" "$corpus" -- \
        -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        echo "fuzz: $target ok: ${runs:-?} inputs, corpus $(find "$corpus" -type f | wc -l) entries"
    else
        failed+=("$target")
        cp "$log" "artifacts/$target/fuzz.log"
        echo "fuzz: $target FAILED (its whole log: fuzz/artifacts/$target/fuzz.log):"
        { grep -A2 -m1 'panicked at' "$log" || true; grep -m1 'SUMMARY' "$log" || true; } |
            sed 's/^/    /'
        for input in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "fuzz: $target: crash input: fuzz/$input"
            echo "fuzz: reproduce with: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $target $input)"
        done
    fi
done

echo "fuzz: done in $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: targets that crashed: ${failed[*]}" >&2
    exit 1
fi
