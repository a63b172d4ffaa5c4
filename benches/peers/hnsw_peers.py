"""HNSW peers (hnswlib, faiss) on the vectors whorl exported, side by side.

usage: hnsw_peers.py EXPORT_DIR M EF_CONSTRUCTION

Reads gallery.fvecs, queries.fvecs, groundtruth.ivecs and whorl-curve.json
(whorl's implementations: its own graphs over f32, f16 and int8 vectors,
and hnsw_rs) from EXPORT_DIR, builds each peer's HNSW (inner product) with
the same M and ef_construction on 2 threads, measures recall@k and
queries/s at whorl's ef values on 1 and 2 threads, and prints every curve,
the build times, and queries/s at equal recall (0.90, 0.95, 0.99; linear
interpolation along each curve) with the ratio of each whorl
implementation to hnswlib and faiss.
"""
import json
import sys
import time

import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    rows = raw.reshape(-1, dim + 1)[:, 1:]
    return rows.view(dtype) if dtype != np.int32 else rows


def recall(found, truth, k):
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def qps_at(curve, target, col):
    """Queries/s at `target` recall, interpolated between measured points
    (col 0: 1 thread, 1: 2 threads, 2: per CPU second on 1 thread)."""
    pts = sorted((r, q) for (_, r, *qs) in curve for q in [qs[col]])
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 + (q1 - q0) * (target - r0) / max(r1 - r0, 1e-12)
    return None


def best_of(repeats, run):
    """The fastest of `repeats` runs of `run()` -> (result, wall s, CPU s)."""
    best = None
    for _ in range(repeats):
        t, c = time.time(), time.process_time()
        out = run()
        wall, cpu = time.time() - t, time.process_time() - c
        best = (out, wall, cpu) if best is None else (out, min(best[1], wall), min(best[2], cpu))
    return best


def run_hnswlib(data, queries, truth, k, m, efc, efs, repeats):
    import hnswlib

    idx = hnswlib.Index(space="ip", dim=data.shape[1])
    idx.init_index(max_elements=len(data), ef_construction=efc, M=m)
    t, c = time.time(), time.process_time()
    idx.add_items(data, np.arange(len(data)), num_threads=2)
    build = (time.time() - t, time.process_time() - c)
    curve = []
    for ef in efs:
        idx.set_ef(max(ef, k))
        row = [ef, None]
        for threads in (1, 2):
            (labels, _), wall, cpu = best_of(repeats, lambda: idx.knn_query(queries, k=k, num_threads=threads))
            row.append(len(queries) / wall)
            if threads == 1:
                per_cpu = len(queries) / max(cpu, 1e-9)
        row.append(per_cpu)
        row[1] = recall(labels, truth, k)
        curve.append(row)
    return build, curve


def run_faiss(data, queries, truth, k, m, efc, efs, repeats):
    import faiss

    idx = faiss.IndexHNSWFlat(data.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = efc
    faiss.omp_set_num_threads(2)
    t, c = time.time(), time.process_time()
    idx.add(data)
    build = (time.time() - t, time.process_time() - c)
    curve = []
    for ef in efs:
        idx.hnsw.efSearch = max(ef, k)
        row = [ef, None]
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            (_, labels), wall, cpu = best_of(repeats, lambda: idx.search(queries, k))
            row.append(len(queries) / wall)
            if threads == 1:
                per_cpu = len(queries) / max(cpu, 1e-9)
        row.append(per_cpu)
        row[1] = recall(labels, truth, k)
        curve.append(row)
    return build, curve


def main():
    out, m, efc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = np.ascontiguousarray(read_vecs(f"{out}/gallery.fvecs", np.float32))
    queries = np.ascontiguousarray(read_vecs(f"{out}/queries.fvecs", np.float32))
    truth = read_vecs(f"{out}/groundtruth.ivecs", np.int32)
    whorl = json.load(open(f"{out}/whorl-curve.json"))
    k = whorl["k"]
    ours = {
        name: ((c["build_seconds"], c["build_cpu_seconds"]), c["curve"]) for name, c in whorl["contenders"].items()
    }
    efs = [row[0] for row in next(iter(ours.values()))[1]]
    print(
        f"{len(data)} vectors of {data.shape[1]} dims, {len(queries)} queries, k {k}, M {m}, ef_construction {efc};"
        f" each search timing is the best of {whorl.get('repeats', 1)} runs"
    )
    peers = {}
    for name, fn in (("hnswlib 0.8.0", run_hnswlib), ("faiss-cpu 1.15.1", run_faiss)):
        peers[name] = fn(data, queries, truth, k, m, efc, efs, whorl.get("repeats", 1))
    curves = {**ours, **peers}
    for name, (build, curve) in curves.items():
        print(f"\n{name}: build {build[0]:.1f} s on 2 threads ({build[1]:.1f} CPU s)")
        print("| ef | recall@%d | queries/s, 1 thread | queries/s, 2 threads | queries per CPU second, 1 thread |" % k)
        print("|---|---|---|---|---|")
        for ef, r, q1, q2, qc in curve:
            print(f"| {ef} | {r:.4f} | {q1:.0f} | {q2:.0f} | {qc:.0f} |")
    peer_names = list(peers)
    short = [n.split()[0] for n in peer_names]
    print("\nbuild on 2 threads: wall and CPU seconds, and their ratios to each peer's (below 1: whorl builds faster):")
    print("| implementation | build s | CPU s | " + " | ".join(f"wall / {s} | CPU / {s}" for s in short) + " |")
    print("|---|---|---|" + "---|---|" * len(short))
    for name, (build, _) in curves.items():
        ratios = " | ".join(f"{build[0] / peers[p][0][0]:.2f} | {build[1] / peers[p][0][1]:.2f}" for p in peer_names)
        print(f"| {name} | {build[0]:.1f} | {build[1]:.1f} | {ratios} |")
    print("\nqueries/s at equal recall (interpolated) and each implementation's ratio to each peer (above 1: whorl is faster):")
    print("| recall | threads | implementation | queries/s | " + " | ".join(f"/ {s}" for s in short) + " |")
    print("|---|---|---|---|" + "---|" * len(short))
    for target in (0.90, 0.95, 0.99):
        for col, threads in ((0, "1"), (1, "2"), (2, "1, per CPU s")):
            base = [qps_at(peers[p][1], target, col) for p in peer_names]
            for name, (_, curve) in curves.items():
                v = qps_at(curve, target, col)
                cell = f"{v:.0f}" if v else "not reached"
                ratios = " | ".join(f"{v / b:.2f}" if v and b else "n/a" for b in base)
                print(f"| {target} | {threads} | {name} | {cell} | {ratios} |")


if __name__ == "__main__":
    main()
