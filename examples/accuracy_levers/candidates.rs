//! The candidate-stage levers: VLAD, training size and crops, MCC-LSH.

use crate::arg;
use rayon::prelude::*;
use std::f32::consts::TAU;
use std::time::Instant;
use whorl::embed::pairs::{PairBins, add_minutia_pairs, points};
use whorl::embed::{Embedder, dot, normalise, train::kmeans, whiten::Whitening};
use whorl::eval::candidates::{exact_ranks, hit_rates};
use whorl::synth::{Synth, SynthParams};
use whorl::template::Template;

#[derive(Clone, Copy)]
struct Loc {
    d_bins: usize,
    a_bins: usize,
    b_bins: usize,
    d_max: f32,
}
impl Loc {
    fn dim(&self) -> usize {
        self.d_bins * self.a_bins * self.b_bins
    }
}

/// Per-minutia local descriptors (rows of loc.dim()): the pair histogram
/// of each minutia's own pairs, square-rooted and normalised.
fn locals(t: &Template, loc: Loc) -> Vec<Vec<f32>> {
    let bins = PairBins { d_bins: loc.d_bins, a_bins: loc.a_bins, b_bins: loc.b_bins, d_max: loc.d_max };
    let pts = points(t);
    let mut out = Vec::new();
    for i in 0..pts.len() {
        let mut h = vec![0f32; loc.dim()];
        if add_minutia_pairs(&pts, i, bins, &mut h) < 2 {
            continue;
        }
        for v in h.iter_mut() {
            *v = v.sqrt();
        }
        normalise(&mut h);
        out.push(h);
    }
    out
}

fn nearest(c: &[f32], dim: usize, x: &[f32]) -> usize {
    let k = c.len() / dim;
    (0..k)
        .map(|q| (c[q * dim..(q + 1) * dim].iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(), q))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(0, |b| b.1)
}

fn vlad(t: &Template, loc: Loc, codebook: &[f32], alpha: f32) -> Vec<f32> {
    let dim = loc.dim();
    let k = codebook.len() / dim;
    let mut v = vec![0f32; k * dim];
    for x in locals(t, loc) {
        let q = nearest(codebook, dim, &x);
        for ((o, a), c) in v[q * dim..(q + 1) * dim].iter_mut().zip(&x).zip(&codebook[q * dim..(q + 1) * dim]) {
            *o += a - c;
        }
    }
    for blk in v.chunks_exact_mut(dim) {
        normalise(blk);
    }
    for x in v.iter_mut() {
        *x = x.signum() * x.abs().powf(alpha);
    }
    normalise(&mut v);
    v
}

/// Hit rates (%) at 0.1%, 1% and 5% penetration of mate `ranks` in a gallery of `size`.
fn rates(ranks: &[usize], size: usize) -> String {
    let r = hit_rates(ranks, size, &[0.001, 0.01, 0.05]);
    format!("0.1% {:.1} 1% {:.1} 5% {:.1}", 100.0 * r[0].hit_rate, 100.0 * r[1].hit_rate, 100.0 * r[2].hit_rate)
}

/// Exact search: probe `i`'s mate is gallery row `i`.
fn hits(gallery: &[Vec<f32>], probes: &[Vec<f32>]) -> String {
    let dim = gallery.first().map_or(0, Vec::len);
    let flat: Vec<f32> = gallery.concat();
    let mates: Vec<usize> = (0..probes.len()).collect();
    rates(&exact_ranks(&flat, dim, probes, &mates), gallery.len())
}

/// (x − mean) / standard deviation.
fn zscore(x: &[f32]) -> Vec<f32> {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let sd = (x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-12);
    x.iter().map(|&v| ((f64::from(v) - mean) / sd) as f32).collect()
}

/// Mode 1: VLAD of per-minutia pair histograms against the shipped pair histogram.
pub fn vlad_main(args: &[String]) {
    let k: usize = arg(args, 2, 8);
    let d_bins: usize = arg(args, 3, 4);
    let ab: usize = arg(args, 4, 8);
    let d_max: f32 = arg(args, 5, 120.0);
    let train_fingers: u64 = arg(args, 6, 4000);
    let dout: usize = arg(args, 7, 512);
    let alpha: f32 = arg(args, 8, 0.5);
    if k == 0 || d_bins == 0 || ab == 0 || d_max <= 0.0 || train_fingers < 1000 || dout == 0 {
        eprintln!("vlad: K, bins and DOUT at least 1, D_MAX positive, FINGERS at least 1000");
        std::process::exit(2);
    }
    let loc = Loc { d_bins, a_bins: ab, b_bins: ab, d_max };
    let t0 = Instant::now();
    let eval = Synth::new(SynthParams::default(), 11);
    let gal: Vec<Template> = eval.batch(0..10_000, 0..1).into_iter().map(|r| r.template).collect();
    let pro: Vec<Template> = eval.batch(0..1000, 1..2).into_iter().map(|r| r.template).collect();
    if args.get(9).map(|s| s == "base").unwrap_or(false) {
        let e = Embedder::default();
        let g: Vec<Vec<f32>> = gal.par_iter().map(|t| e.embed(t)).collect();
        let p: Vec<Vec<f32>> = pro.par_iter().map(|t| e.embed(t)).collect();
        println!("baseline {} : {} ({:.0}s)", e.id(), hits(&g, &p), t0.elapsed().as_secs_f64());
    }
    let train = Synth::new(SynthParams::default(), 999_331);
    let tr: Vec<(u64, Template)> =
        train.batch(0..train_fingers, 0..2).into_iter().map(|r| (r.finger, r.template)).collect();
    // Codebook from local descriptors of the first 1000 training templates.
    let sample: Vec<f32> = tr[..2000.min(tr.len())]
        .par_iter()
        .step_by(2)
        .flat_map_iter(|(_, t)| locals(t, loc).into_iter().flatten())
        .collect();
    eprintln!("{} local descriptors of {} dims", sample.len() / loc.dim(), loc.dim());
    let codebook = kmeans(&sample, loc.dim(), k, 12, 7);
    eprintln!("codebook {:.0}s", t0.elapsed().as_secs_f64());
    let din = k * loc.dim();
    let data: Vec<f32> = tr.par_iter().flat_map_iter(|(_, t)| vlad(t, loc, &codebook, alpha)).collect();
    let pairs: Vec<(usize, usize)> = (0..train_fingers as usize).map(|f| (2 * f, 2 * f + 1)).collect();
    let w = Whitening::learn_supervised(&data, din, &pairs, dout, 0.002);
    eprintln!("whitening {:.0}s", t0.elapsed().as_secs_f64());
    let emb = |t: &Template| {
        let v = vlad(t, loc, &codebook, alpha);
        let mut o = vec![0f32; w.dout];
        w.apply(&v, &mut o);
        o
    };
    let g: Vec<Vec<f32>> = gal.par_iter().map(emb).collect();
    let p: Vec<Vec<f32>> = pro.par_iter().map(emb).collect();
    println!(
        "vlad K={k} loc={d_bins}x{ab}x{ab}@{d_max} din={din} dout={dout} train={train_fingers} alpha={alpha}: {} ({:.0}s)",
        hits(&g, &p),
        t0.elapsed().as_secs_f64()
    );
}

/// Mode 2: the pair histogram with supervised whitening, training size and crops.
pub fn hist_main(args: &[String]) {
    use whorl::embed::raw_histogram;
    let fingers: u64 = arg(args, 2, 8000);
    let imps: u32 = arg(args, 3, 2);
    let dout: usize = arg(args, 4, 512);
    let crops: usize = arg(args, 5, 0);
    if fingers == 0 || imps < 2 || dout == 0 {
        eprintln!("hist: FINGERS and DOUT at least 1, IMPRESSIONS at least 2");
        std::process::exit(2);
    }
    let bins = PairBins { d_bins: 8, a_bins: 12, b_bins: 12, d_max: 160.0 };
    let din = bins.dim();
    let t0 = Instant::now();
    let train = Synth::new(SynthParams::default(), 999_331);
    let tr: Vec<(u64, Template)> =
        train.batch(0..fingers, 0..imps).into_iter().map(|r| (r.finger, r.template)).collect();
    let h = |t: &Template| {
        let mut v = vec![0f32; din];
        raw_histogram(t, bins, &mut v);
        v
    };
    let data: Vec<f32> = tr.par_iter().flat_map_iter(|(_, t)| h(t)).collect();
    let mut pairs = Vec::new();
    for f in 0..fingers as usize {
        for a in 0..imps as usize {
            for b in a + 1..imps as usize {
                pairs.push((f * imps as usize + a, f * imps as usize + b));
            }
        }
    }
    let w = Whitening::learn_supervised(&data, din, &pairs, dout, 0.002);
    eprintln!("trained {:.0}s", t0.elapsed().as_secs_f64());
    let emb = |t: &Template| {
        let mut o = vec![0f32; w.dout];
        w.apply(&h(t), &mut o);
        o
    };
    let eval = Synth::new(SynthParams::default(), 11);
    let gal: Vec<Template> = eval.batch(0..10_000, 0..1).into_iter().map(|r| r.template).collect();
    let pro: Vec<Template> = eval.batch(0..1000, 1..2).into_iter().map(|r| r.template).collect();
    let g: Vec<Vec<f32>> = gal.par_iter().map(emb).collect();
    let pv: Vec<Vec<f32>> = pro.par_iter().map(emb).collect();
    println!("hist fingers={fingers} imps={imps} dout={dout}: {} ({:.0}s)", hits(&g, &pv), t0.elapsed().as_secs_f64());
    if crops > 0 {
        // Gallery variants: the whole template and half-planes through the centroid at `crops` directions.
        let variants = |t: &Template| -> Vec<Vec<f32>> {
            let n = t.minutiae.len() as f32;
            let (cx, cy) = t.minutiae.iter().fold((0f32, 0f32), |a, m| (a.0 + m.x / n, a.1 + m.y / n));
            let mut out = vec![emb(t)];
            for c in 0..crops {
                let th = TAU * c as f32 / crops as f32;
                let (ux, uy) = (th.cos(), th.sin());
                let mut u = t.clone();
                u.minutiae.retain(|m| (m.x - cx) * ux + (m.y - cy) * uy > -30.0);
                out.push(emb(&u));
            }
            out
        };
        let gv: Vec<Vec<Vec<f32>>> = gal.par_iter().map(variants).collect();
        let ranks: Vec<usize> = pv
            .par_iter()
            .enumerate()
            .map(|(i, q)| {
                let best = |vs: &Vec<Vec<f32>>| vs.iter().map(|v| dot(q, v)).fold(f32::MIN, f32::max);
                let t = best(&gv[i]);
                gv.iter().filter(|g| best(g) > t).count()
            })
            .collect();
        println!("  + {crops} half-plane gallery variants (max): {}", rates(&ranks, gv.len()));
    }
}

/// Mode 3: MCC-LSH indexing (Cappelli, Ferrara, Maltoni, TPAMI 33(5) 2011) by brute-force hash tables.
pub fn lsh_main(args: &[String]) {
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use whorl::mcc::Matcher;
    let h_n: usize = arg(args, 2, 32);
    let bits: usize = arg(args, 3, 24);
    let gsize: u64 = arg(args, 4, 10000);
    let norm: String = arg(args, 5, "sqrt".to_string());
    if h_n == 0 || !(1..=56).contains(&bits) || h_n > 256 || gsize < 1000 {
        eprintln!("lsh: HASHES at least 1, BITS 1-56, HASHES at most 256, GALLERY at least 1000");
        std::process::exit(2);
    }
    let t0 = Instant::now();
    let m = Matcher::default();
    let eval = Synth::new(SynthParams::default(), 11);
    let gal_t: Vec<Template> = eval.batch(0..gsize, 0..1).into_iter().map(|r| r.template).collect();
    let pro_t: Vec<Template> = eval.batch(0..1000, 1..2).into_iter().map(|r| r.template).collect();
    let gal: Vec<_> = gal_t.par_iter().map(|t| m.prepare(t)).collect();
    let pro: Vec<_> = pro_t.par_iter().map(|t| m.prepare(t)).collect();
    eprintln!("prepared {:.0}s", t0.elapsed().as_secs_f64());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let fns: Vec<Vec<(usize, usize)>> = (0..h_n)
        .map(|_| (0..bits).map(|_| (rng.random_range(0..6usize), rng.random_range(0..208usize))).collect())
        .collect();
    let key = |cyl: &[u64; 28], h: usize| -> Option<u64> {
        let mut k = 0u64;
        for (b, &(layer, cell)) in fns[h].iter().enumerate() {
            if cyl[cell / 64] >> (cell % 64) & 1 == 0 {
                return None;
            }
            k |= (cyl[4 + 4 * layer + cell / 64] >> (cell % 64) & 1) << b;
        }
        Some(((h as u64) << 56) | k)
    };
    let mut table: HashMap<u64, Vec<u32>> = HashMap::new();
    for (g, t) in gal.iter().enumerate() {
        let v = t.view();
        for i in 0..v.len() {
            for h in 0..h_n {
                if let Some(k) = key(v.cylinder(i), h) {
                    table.entry(k).or_default().push(g as u32);
                }
            }
        }
    }
    eprintln!("table {} keys {:.0}s", table.len(), t0.elapsed().as_secs_f64());
    let ncyl: Vec<f32> = gal.iter().map(|t| t.view().len().max(1) as f32).collect();
    // The shipped embedder on the same templates, for late fusion with the votes.
    let e = Embedder::default();
    let gal_e: Vec<Vec<f32>> = gal_t.par_iter().map(|t| e.embed(t)).collect();
    let weights = [0.0f32, 0.25, 0.5, 1.0, 2.0];
    // Per probe: the rank of the mate by votes alone, then by z(cosine) + w·z(votes) for each weight.
    let ranks: Vec<Vec<usize>> = pro
        .par_iter()
        .zip(pro_t.par_iter())
        .enumerate()
        .map(|(i, (q, qt))| {
            let v = q.view();
            let mut votes = vec![0f32; gal.len()];
            for c in 0..v.len() {
                for h in 0..h_n {
                    if let Some(list) = key(v.cylinder(c), h).and_then(|k| table.get(&k)) {
                        let w = if norm == "idf" { (gal.len() as f32 / list.len() as f32).ln() } else { 1.0 };
                        for &g in list {
                            votes[g as usize] += w;
                        }
                    }
                }
            }
            let s: Vec<f32> = votes
                .iter()
                .zip(&ncyl)
                .map(|(&x, &n)| match norm.as_str() {
                    "sqrt" | "idf" => x / n.sqrt(),
                    "lin" => x / n,
                    _ => x,
                })
                .collect();
            let qe = e.embed(qt);
            let cos: Vec<f32> = gal_e.iter().map(|g| dot(&qe, g)).collect();
            let (zs, zc) = (zscore(&s), zscore(&cos));
            let rank_of = |f: &dyn Fn(usize) -> f32| {
                let t = f(i);
                (0..gal.len()).filter(|&j| f(j) > t).count()
            };
            let mut out = vec![rank_of(&|j| s[j])];
            for &w in &weights {
                out.push(rank_of(&|j| zc[j] + w * zs[j]));
            }
            out
        })
        .collect();
    let g = gal.len();
    let column = |col: usize| rates(&ranks.iter().map(|x| x[col]).collect::<Vec<_>>(), g);
    println!("lsh H={h_n} P={bits} gallery={g} norm={norm}: {} ({:.0}s)", column(0), t0.elapsed().as_secs_f64());
    for (c, w) in weights.iter().enumerate() {
        println!("  fused z(cosine) + {w}·z(votes): {}", column(c + 1));
    }
}

/// Mode 4: the data the learned representations in `learned/` train and
/// are measured on, as little-endian f32 files in `DIR`: for each of
/// `train` (seed 999331, FINGERS × 4 impressions, finger-major), `gal`
/// (seed 11, impression 0 of 10,000) and `probe` (seed 11, impression 1 of
/// the first 1,000): `.pts` rows of 2 + 128·3 (finger, minutia count, then
/// x, y, direction in 500-dpi pixels, zero-padded), `.hist` the shipped
/// model's raw pair histogram, `.emb` the shipped embedding; `model.f32`
/// the shipped model's mean and projection (rows of D_in).
pub fn dump_main(args: &[String]) {
    use std::io::Write;
    use whorl::embed::{builtin_model, raw_histogram};
    let fingers: u64 = arg(args, 2, 30_000);
    let dir = std::path::PathBuf::from(arg(args, 3, "target/learned".to_string()));
    if fingers == 0 {
        eprintln!("dump: FINGERS at least 1");
        std::process::exit(2);
    }
    const P: usize = 128;
    let model = builtin_model().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let e = Embedder::default();
    let write = |path: std::path::PathBuf, rows: &mut dyn Iterator<Item = f32>| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap_or_else(|err| {
            eprintln!("{}: {err}", path.display());
            std::process::exit(1)
        }));
        for x in rows {
            f.write_all(&x.to_le_bytes()).expect("write");
        }
        f.flush().expect("write");
    };
    std::fs::create_dir_all(&dir).expect("output folder");
    for (name, seed, f, imps) in
        [("train", 999_331u64, 0..fingers, 0..4u32), ("gal", 11, 0..10_000, 0..1), ("probe", 11, 0..1000, 1..2)]
    {
        let recs = Synth::new(SynthParams::default(), seed).batch(f, imps);
        let rows: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = recs
            .par_iter()
            .map(|r| {
                let p = points(&r.template);
                let mut pts = vec![0f32; 2 + P * 3];
                pts[0] = r.finger as f32;
                pts[1] = p.len().min(P) as f32;
                for (k, &(x, y, t)) in p.iter().take(P).enumerate() {
                    pts[2 + 3 * k..5 + 3 * k].copy_from_slice(&[x, y, t]);
                }
                let mut h = vec![0f32; model.bins.dim()];
                raw_histogram(&r.template, model.bins, &mut h);
                (pts, h, e.embed(&r.template))
            })
            .collect();
        write(dir.join(format!("{name}.pts")), &mut rows.iter().flat_map(|r| r.0.iter().copied()));
        write(dir.join(format!("{name}.hist")), &mut rows.iter().flat_map(|r| r.1.iter().copied()));
        write(dir.join(format!("{name}.emb")), &mut rows.iter().flat_map(|r| r.2.iter().copied()));
        println!("{name}: {} templates", rows.len());
    }
    let w = &model.whitening;
    write(dir.join("model.f32"), &mut w.mean.iter().chain(&w.proj).copied());
}
