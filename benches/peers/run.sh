#!/usr/bin/env bash
# Side-by-side HNSW benchmark: whorl's own graphs (f32, f16, int8 vectors,
# int8 with an f32 re-rank) and hnsw_rs against hnswlib and faiss on the
# very same vectors, in one run.
#
#   benches/peers/run.sh [GALLERY] [QUERIES] [M] [EF_CONSTRUCTION]
#
# 1. `whorl eval-candidates --hnsw` embeds a synthetic gallery of GALLERY
#    fingers (default 100,000), builds each of its implementations' graphs,
#    measures recall@10 and queries/s per ef on 1 and 2 threads, and exports
#    the vectors, the queries and the exact top-10 (TEXMEX .fvecs/.ivecs)
#    plus its own curves (whorl-curve.json) into target/peers.
#    IMPLS (environment) picks the whorl side, e.g. IMPLS=whorl-f32,hnsw_rs.
# 2. A virtual environment gets faiss-cpu and hnswlib from PyPI (hnswlib
#    builds from source with the system C++ compiler).
# 3. hnsw_peers.py builds each peer's HNSW with the same M and
#    ef_construction, measures the same ef values, and prints the ratio of
#    whorl's queries/s to each peer's at equal recall (interpolated).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
gallery=${1:-100000}
queries=${2:-1000}
m=${3:-16}
efc=${4:-200}
out="$root/target/peers"
venv="${PEERS_VENV:-$root/target/peers-venv}"
mkdir -p "$out"

echo "==> whorl ($gallery vectors, M $m, ef_construction $efc)"
(cd "$root" && cargo build --release --locked -q)
"$root/target/release/whorl" eval-candidates --distractors 0 --synthetic "$gallery" --probes "$queries" \
  --hnsw --queries "$queries" --m "$m" --ef-construction "$efc" --export "$out" \
  ${IMPLS:+--impls "$IMPLS"} | tee "$out/whorl.txt"

echo "==> peers: virtual environment in $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q numpy faiss-cpu==1.15.1 hnswlib==0.8.0
"$venv/bin/python" "$here/hnsw_peers.py" "$out" "$m" "$efc" | tee "$out/peers.txt"
