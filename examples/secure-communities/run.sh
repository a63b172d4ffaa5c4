#!/usr/bin/env bash
# The booking-station flow against a live `whorl serve`, with clients
# written against the .proto files alone (Python, grpcio): two galleries
# built from real FVC2002 templates (criminal records: fingers 103-110;
# immigration records: 101-105, which notify), an enforcement subscriber
# following immigration hits, and two bookings:
#   * 103 (enrolled in both): both galleries answer, immigration hits, and
#     the subscriber receives exactly one event;
#   * a finger enrolled nowhere: no hit, no event.
#
#   bash examples/secure-communities/run.sh WHORL_BINARY PYTHON [DATA_DIR]
#
# PYTHON needs grpcio, grpcio-tools. Exit status 0 when every expectation holds.
set -euo pipefail
whorl=$(realpath "$1")
py=$2
here=$(cd "$(dirname "$0")" && pwd)
data=$(realpath "${3:-$here/../../../shared/data/fvc2002}")
port=${WHORL_EXAMPLE_PORT:-50079}
work=$(mktemp -d)
srv=""
sub=""
cleanup() {
  [ -n "$sub" ] && kill "$sub" 2>/dev/null || true
  [ -n "$srv" ] && kill "$srv" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

imm=() crim=()
for s in 101 102 103 104 105; do imm+=("$data/DB1_B/${s}_1.iso"); done
for s in 103 104 105 106 107 108 109 110; do crim+=("$data/DB1_B/${s}_1.iso"); done
"$whorl" build --input "${imm[@]}" --out "$work/immigration" --m 16 --ef-construction 100 >/dev/null
"$whorl" build --input "${crim[@]}" --out "$work/criminal" --m 16 --ef-construction 100 >/dev/null

station=station-$RANDOM$RANDOM$RANDOM$RANDOM
ice=ice-$RANDOM$RANDOM$RANDOM$RANDOM
cat >"$work/whorl.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[gallery]
name = "criminal"
path = "$work/criminal"

[[galleries]]
name = "immigration"
path = "$work/immigration"
notify = true

[notifications]
dir = "$work/events"

[backend]
choice = "cpu"

[[auth.tokens]]
name = "booking-station"
role = "search"
token = "$station"
galleries = ["criminal", "immigration"]

[[auth.tokens]]
name = "enforcement"
role = "notify"
token = "$ice"
galleries = ["immigration"]
EOF

"$whorl" serve --config "$work/whorl.toml" >"$work/serve.log" 2>&1 &
srv=$!
for _ in $(seq 1 300); do
  grep -q "ready on" "$work/serve.log" && break
  kill -0 "$srv" 2>/dev/null || break
  sleep 0.5
done
cat "$work/serve.log"
grep -q "ready on" "$work/serve.log" || { echo "the server did not start"; exit 1; }

"$py" "$here/enforcement.py" --server "127.0.0.1:$port" --token "$ice" --subscriber ice \
  --gallery immigration --expect 1 --idle 5 --timeout 120 &
sub=$!
sleep 2
"$py" "$here/booking_station.py" --server "127.0.0.1:$port" --token "$station" --booking B-0001 \
  --expect-hit immigration:103 "$data/DB1_B/103_2.iso"
"$py" "$here/booking_station.py" --server "127.0.0.1:$port" --token "$station" --booking B-0002 \
  --expect-no-hit "$data/DB3_B/110_2.iso"
wait "$sub"
sub=""
echo "secure-communities: both galleries answered, exactly one event for the one immigration hit"
