//! Experiment behind benches/reports/embedding.md: how the whitening power
//! (full whitening 0.5 vs partial) and the HNSW degree M change how often the
//! mate is found through HNSW, and at what cost.
//!
//! `N=100000 M=16 ALPHAS=0.5,0.25 cargo run --release --example hnsw_whitening`
//! (the PCA of the training histograms is cached in /tmp/pca1152.bin).
use rayon::prelude::*;
use std::io::{Read, Write};
use whorl::embed::{
    dot, normalise,
    pairs::PairBins,
    raw_histogram,
    whiten::{Pca, Whitening},
};
use whorl::index::{CandidateIndex, HnswRsGraph as Graph, IndexParams};
use whorl::synth::{Synth, SynthParams};
fn pca_cached(din: usize, bins: PairBins) -> Pca {
    let path = "/tmp/pca1152.bin";
    if let Ok(mut f) = std::fs::File::open(path) {
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        let v: Vec<f64> = b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        return Pca { din, mean: v[..din].to_vec(), values: v[din..2 * din].to_vec(), vectors: v[2 * din..].to_vec() };
    }
    let train = Synth::new(SynthParams::default(), 999_331);
    let tv: Vec<f32> = train
        .batch(0..8000, 0..1)
        .par_iter()
        .flat_map_iter(|r| {
            let mut h = vec![0f32; din];
            raw_histogram(&r.template, bins, &mut h);
            h
        })
        .collect();
    let p = Pca::learn(&tv, din);
    let mut f = std::fs::File::create(path).unwrap();
    for x in p.mean.iter().chain(&p.values).chain(&p.vectors) {
        f.write_all(&x.to_le_bytes()).unwrap();
    }
    p
}
fn main() {
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let m: usize = std::env::var("M").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let alphas: Vec<f64> = std::env::var("ALPHAS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![0.5, 0.25]);
    let bins = PairBins { d_bins: 8, a_bins: 12, b_bins: 12, d_max: 160.0 };
    let din = bins.dim();
    let pca = pca_cached(din, bins);
    let eval = Synth::new(SynthParams::default(), 11);
    let raw = |t: &whorl::template::Template| {
        let mut h = vec![0f32; din];
        raw_histogram(t, bins, &mut h);
        h
    };
    let graw: Vec<Vec<f32>> = eval.batch(0..n as u64, 0..1).par_iter().map(|r| raw(&r.template)).collect();
    let nq = 500;
    let praw: Vec<Vec<f32>> = eval.batch(0..nq as u64, 1..2).par_iter().map(|r| raw(&r.template)).collect();
    let full = Whitening::from_pca(&pca, 512, 0.002, 0.5);
    let ap = |w: &Whitening, v: &Vec<f32>| {
        let mut o = vec![0f32; 512];
        w.apply(v, &mut o);
        o
    };
    let gfull: Vec<f32> = graw.par_iter().flat_map_iter(|v| ap(&full, v)).collect();
    let pfull: Vec<Vec<f32>> = praw.iter().map(|v| ap(&full, v)).collect();
    // exact mate ranks in full space
    let exact_rank: Vec<usize> = pfull
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let t = dot(q, &gfull[i * 512..(i + 1) * 512]);
            gfull.chunks_exact(512).filter(|r| dot(q, r) > t).count()
        })
        .collect();
    for l in [100usize, 1000] {
        println!(
            "exact full-whitened: mate in top {l}: {:.1}%",
            100.0 * exact_rank.iter().filter(|&&r| r < l).count() as f64 / nq as f64
        );
    }
    for alpha in alphas {
        let w = Whitening::from_pca(&pca, 512, 0.002, alpha);
        let g: Vec<f32> = graw.par_iter().flat_map_iter(|v| ap(&w, v)).collect();
        let p: Vec<Vec<f32>> = praw.iter().map(|v| ap(&w, v)).collect();
        let t0 = std::time::Instant::now();
        let graph =
            Graph::build(&g, 512, &IndexParams { max_connections: m, ef_construction: 200 }, 10000, |_| {}).unwrap();
        println!("alpha {alpha} M {m}: build {:.0}s", t0.elapsed().as_secs_f64());
        for (k, ef, l) in [
            (100, 100, 100),
            (100, 400, 100),
            (400, 400, 100),
            (1000, 1000, 1000),
            (1000, 1000, 100),
            (3000, 3000, 1000),
        ] {
            let t = std::time::Instant::now();
            let res: Vec<Vec<u32>> =
                p.iter().map(|x| graph.search(x, k, ef).unwrap().iter().map(|h| h.id).collect()).collect();
            let per_q = t.elapsed().as_secs_f64() / nq as f64;
            // direct: mate within first l of HNSW order; rerank: by full-whitened cosine, top l
            let direct = res.iter().enumerate().filter(|(i, r)| r.iter().take(l).any(|&id| id as usize == *i)).count();
            let rerank = res
                .iter()
                .enumerate()
                .filter(|(i, r)| {
                    let q = &pfull[*i];
                    let mut s: Vec<(f32, u32)> =
                        r.iter().map(|&id| (dot(q, &gfull[id as usize * 512..(id as usize + 1) * 512]), id)).collect();
                    s.sort_by(|a, b| b.0.total_cmp(&a.0));
                    s.iter().take(l).any(|x| x.1 as usize == *i)
                })
                .count();
            println!(
                "  k {k} ef {ef} -> top {l}: direct {:.1}%  reranked-full {:.1}%  ({:.2} ms/query 1 thread)",
                100.0 * direct as f64 / nq as f64,
                100.0 * rerank as f64 / nq as f64,
                1000.0 * per_q
            );
        }
    }
    let _ = normalise;
}
