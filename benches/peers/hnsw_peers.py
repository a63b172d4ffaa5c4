"""HNSW peers (hnswlib, faiss) on the vectors whorl exported.

usage: hnsw_peers.py EXPORT_DIR M EF_CONSTRUCTION

Reads gallery.fvecs, queries.fvecs, groundtruth.ivecs and whorl-curve.json
from EXPORT_DIR, builds each peer's HNSW (inner product) with the same M and
ef_construction, measures recall@k and queries/s for whorl's ef values on 1
and 2 threads, and prints the ratio whorl/peer of queries per second at
recall 0.90, 0.95 and 0.99 (linear interpolation along each curve).
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
    """Queries/s at `target` recall, interpolated between measured points."""
    pts = sorted((r, q) for (_, r, *qs) in curve for q in [qs[col]])
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1:
            return q0 + (q1 - q0) * (target - r0) / max(r1 - r0, 1e-12)
    return None


def run_hnswlib(data, queries, truth, k, m, efc, efs):
    import hnswlib

    idx = hnswlib.Index(space="ip", dim=data.shape[1])
    idx.init_index(max_elements=len(data), ef_construction=efc, M=m)
    t = time.time()
    idx.add_items(data, np.arange(len(data)), num_threads=2)
    build = time.time() - t
    curve = []
    for ef in efs:
        idx.set_ef(max(ef, k))
        row = [ef, None]
        for threads in (1, 2):
            t = time.time()
            labels, _ = idx.knn_query(queries, k=k, num_threads=threads)
            row.append(len(queries) / (time.time() - t))
        row[1] = recall(labels, truth, k)
        curve.append(row)
    return build, curve


def run_faiss(data, queries, truth, k, m, efc, efs):
    import faiss

    idx = faiss.IndexHNSWFlat(data.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = efc
    faiss.omp_set_num_threads(2)
    t = time.time()
    idx.add(data)
    build = time.time() - t
    curve = []
    for ef in efs:
        idx.hnsw.efSearch = max(ef, k)
        row = [ef, None]
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            t = time.time()
            _, labels = idx.search(queries, k)
            row.append(len(queries) / (time.time() - t))
        row[1] = recall(labels, truth, k)
        curve.append(row)
    return build, curve


def main():
    out, m, efc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = np.ascontiguousarray(read_vecs(f"{out}/gallery.fvecs", np.float32))
    queries = np.ascontiguousarray(read_vecs(f"{out}/queries.fvecs", np.float32))
    truth = read_vecs(f"{out}/groundtruth.ivecs", np.int32)
    whorl = json.load(open(f"{out}/whorl-curve.json"))
    k, efs = whorl["k"], [row[0] for row in whorl["curve"]]
    curves = {"whorl (hnsw_rs)": (whorl["build_seconds"], whorl["curve"])}
    print(f"{len(data)} vectors of {data.shape[1]} dims, {len(queries)} queries, k {k}, M {m}, ef_construction {efc}")
    for name, fn in (("hnswlib 0.8.0", run_hnswlib), ("faiss-cpu 1.15.1", run_faiss)):
        curves[name] = fn(data, queries, truth, k, m, efc, efs)
    for name, (build, curve) in curves.items():
        print(f"\n{name}: build {build:.1f} s on 2 threads")
        print("| ef | recall@%d | queries/s, 1 thread | queries/s, 2 threads |" % k)
        print("|---|---|---|---|")
        for ef, r, q1, q2 in curve:
            print(f"| {ef} | {r:.4f} | {q1:.0f} | {q2:.0f} |")
    print("\nqueries/s at equal recall (interpolated), and whorl's ratio to each peer:")
    print("| recall | threads | " + " | ".join(curves) + " | " + " | ".join(f"whorl/{n.split()[0]}" for n in list(curves)[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(curves) - 1))
    for target in (0.90, 0.95, 0.99):
        for col, threads in ((0, 1), (1, 2)):
            vals = [qps_at(c, target, col) for (_, c) in curves.values()]
            cells = [f"{v:.0f}" if v else "n/a" for v in vals]
            ratios = [f"{vals[0] / v:.2f}" if vals[0] and v else "n/a" for v in vals[1:]]
            print(f"| {target} | {threads} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
