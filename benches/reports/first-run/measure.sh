#!/usr/bin/env bash
# Measures the README's first-run figures: how long a new user waits, and
# what is cached. Run from anywhere; results go to stdout as markdown.
#
#   benches/reports/first-run/measure.sh            # everything (~25 min quiet, 2 cores)
#   benches/reports/first-run/measure.sh compile    # clean compiles only
#   WHORL_BIN=target/release/whorl benches/reports/first-run/measure.sh demo
#                                                   # the demo's first and later runs only
#
# Compiles go to a fresh target folder under /tmp (the repository's own
# target/ is left alone), so they start from nothing but the crates
# already downloaded in ~/.cargo. The demo's first run gets a fresh cache
# folder. Each figure is printed with the machine's load (uptime) beside
# it: other work on the machine inflates the times.
set -euo pipefail
cd "$(dirname "$0")/../../.."
what=${1:-all}
work=$(mktemp -d /tmp/whorl-first-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

load() { uptime | sed 's/.*load average: //'; }
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }
timed() { # timed LABEL CMD... : runs CMD, prints a row with its wall time and the load before/after
  local label=$1; shift
  local before after t0 t1
  before=$(load); t0=$(date +%s.%N)
  "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s.%N); after=$(load)
  row "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { s = b - a; printf "%d min %02d s", s / 60, s % 60 }')" "$before → $after"
}

echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); rustc $(rustc --version | cut -d' ' -f2); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
row "step" "wall time" "load average (1, 5, 15 min) before → after"
row "---" "---" "---"

bin=${WHORL_BIN:-}
if [ "$what" = all ] || [ "$what" = compile ]; then
  export CARGO_TARGET_DIR=$work/target CARGO_TERM_COLOR=never
  timed "\`cargo build --release\` from a clean target folder (what \`cargo run --release -- demo\` compiles first)" \
    cargo build --release --locked
  timed "then \`cargo test --release --no-run\` (what the test command compiles on top)" \
    cargo test --release --locked --no-run
  row "target folder after both" "$(du -sh "$CARGO_TARGET_DIR" | cut -f1)" ""
  bin=$CARGO_TARGET_DIR/release/whorl
fi
if [ "$what" = all ] || [ "$what" = demo ]; then
  bin=${bin:-target/release/whorl}
  cache=$work/whorl-demo
  timed "\`whorl demo\`, first run (builds the 100,000-subject gallery)" "$bin" demo --cache "$cache" --backend cpu
  grep -E "templates in|gallery open" "$work/last.log" | sed 's/^ */  /' >"$work/first.txt" || true
  timed "\`whorl demo\`, a later run (gallery cached)" "$bin" demo --cache "$cache" --backend cpu
  cp "$work/last.log" "$work/later.txt"
  row "demo cache (the gallery kept between runs)" "$(du -sh "$cache" | cut -f1)" ""
  echo
  echo "First run, as the demo reports it:"; echo '```'; cat "$work/first.txt"; echo '```'
  echo "A later run's whole output:"; echo '```'; cat "$work/later.txt"; echo '```'
fi
