//! Graph quality and build cost of whorl's HNSW built over the f32 rows in
//! place against over an int8 copy (what `whorl::index::build::build`
//! does for float galleries): recall@10 of the f32 search against exact
//! search and queries per CPU second, on vectors exported by
//! `benches/peers/run.sh N Q M EFC` (target/peers).
//!
//! cargo run --release --example quantised_build [DIR] [M] [EF_CONSTRUCTION]

use std::sync::Arc;
use whorl::index::build::{build, build_in_place};
use whorl::index::{AlignedBytes, Bytes, IndexParams, MappedGraph, VectorKind, VectorsLayout, exact_search, layout};

fn read(p: &str) -> (Vec<f32>, usize) {
    let raw = std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e} (run benches/peers/run.sh first)"));
    let d = i32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    for row in raw.chunks_exact(4 * (d + 1)) {
        out.extend(row[4..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())));
    }
    (out, d)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or("target/peers".into());
    let m = args.get(2).and_then(|x| x.parse().ok()).unwrap_or(16);
    let efc = args.get(3).and_then(|x| x.parse().ok()).unwrap_or(100);
    let (g, d) = read(&format!("{dir}/gallery.fvecs"));
    let (q, _) = read(&format!("{dir}/queries.fvecs"));
    let truth: Vec<Vec<u32>> =
        q.chunks_exact(d).map(|x| exact_search(&g, d, x, 10, None).iter().map(|h| h.id).collect()).collect();
    let n = g.len() / d;
    let bytes: Bytes = Arc::new(AlignedBytes::new(bytemuck::cast_slice(&g)));
    let vectors = VectorsLayout { kind: VectorKind::F32, dim: d, values: 0..g.len() * 4, scales: 0..0 };
    let v = vectors.view((*bytes).as_ref()).unwrap();
    let rows: Vec<u32> = (0..n as u32).collect();
    let p = IndexParams { max_connections: m, ef_construction: efc };
    println!("{n} vectors of {d} dims, {} queries, M {m}, ef_construction {efc}", truth.len());
    println!("| round | build | build CPU s | ef | recall@10 | queries per CPU second |\n|---|---|---|---|---|---|");
    for round in 0..2 {
        for (name, in_place) in [("f32 in place", true), ("int8 copy", false)] {
            let c0 = cpu_time::ProcessTime::now();
            let mut quiet = |_, _| {};
            let (built, _) = if in_place {
                build_in_place(v, &rows, 0, &p, 1, &mut quiet).unwrap()
            } else {
                build(v, &rows, 0, &p, 1, &mut quiet).unwrap()
            };
            let cpu = c0.elapsed().as_secs_f64();
            let section = layout::write(m, 2 * m, efc, 1, &[built]);
            let l = layout::parse(&section, 0).unwrap().remove(0);
            let graph_bytes: Bytes = Arc::new(AlignedBytes::new(&section));
            let graph = MappedGraph::open(graph_bytes, l, bytes.clone(), vectors.clone()).unwrap();
            for ef in [64, 128, 256] {
                let (mut best, mut hit) = (0f64, 0);
                for _ in 0..3 {
                    hit = 0;
                    let c0 = cpu_time::ProcessTime::now();
                    for (x, t) in q.chunks_exact(d).zip(&truth) {
                        use whorl::index::CandidateIndex;
                        hit += graph.search(x, 10, ef).unwrap().iter().filter(|h| t.contains(&h.id)).count();
                    }
                    best = best.max(truth.len() as f64 / c0.elapsed().as_secs_f64());
                }
                let r = hit as f64 / (10 * truth.len()) as f64;
                println!("| {round} | {name} | {cpu:.1} | {ef} | {r:.4} | {best:.0} |");
            }
        }
    }
}
