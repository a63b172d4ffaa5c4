//! HNSW measurements for `whorl eval-candidates --hnsw`: build time and
//! memory, recall@k against exact search, queries per second on 1 and 2
//! threads per ef, save and memory-mapped reload, and an export for the
//! peer libraries (benches/peers).

use super::candidates::CandidatesArgs;
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use whorl::embed::Embedder;
use whorl::index::{Graph, Hit, IndexMeta, IndexParams, exact_search, saved, vectors_crc};

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn recall(found: &[Vec<Hit>], truth: &[Vec<Hit>], k: usize) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().take(k).filter(|h| t.iter().take(k).any(|x| x.id == h.id)).count())
        .sum();
    hits as f64 / (k * truth.len()).max(1) as f64
}

fn timed<T: Send>(threads: usize, work: impl Fn() -> T + Send + Sync) -> Result<(T, f64)> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let t0 = Instant::now();
    let out = pool.install(work);
    Ok((out, t0.elapsed().as_secs_f64()))
}

pub fn run(a: &CandidatesArgs, e: &Embedder, g: &[f32], probes: &[Vec<f32>]) -> Result<()> {
    let dim = e.dim();
    let n = g.len() / dim;
    let queries: Vec<&Vec<f32>> = probes.iter().take(a.queries).collect();
    if queries.is_empty() {
        bail!("no queries");
    }
    let k = a.k;
    outln!(
        "\nHNSW over {n} vectors of {dim} dims (hnsw_rs 0.3.5, M {}, ef_construction {}), {} queries, k {k}",
        a.m,
        a.ef_construction,
        queries.len()
    )?;
    // Ground truth and the exact search's own speed.
    let (truth, secs) = timed(2, || queries.par_iter().map(|q| exact_search(g, dim, q, k, None)).collect::<Vec<_>>())?;
    outln!("exact search: {:.1} queries/s on 2 threads", queries.len() as f64 / secs)?;
    let rss0 = peak_rss_mib();
    let mut build_seconds = 0.0;
    let crc = vectors_crc(g);
    let params = IndexParams { max_connections: a.m, ef_construction: a.ef_construction };
    let graph = if a.reuse_index {
        let (g, _) = saved::load(&a.index_dir, "gallery", true, Some((&e.id(), crc)))?;
        outln!("reused the index in {}", a.index_dir.display())?;
        g
    } else {
        let bar = super::progress(n as u64, "indexing");
        let t0 = Instant::now();
        let graph = Graph::build(g, dim, &params, 10_000, |done| bar.set_position(done as u64))?;
        let build_s = t0.elapsed().as_secs_f64();
        build_seconds = build_s;
        bar.finish_and_clear();
        outln!(
            "build: {build_s:.1} s ({:.0} vectors/s on {} threads); peak RSS {:.0} MiB (vectors alone {:.0} MiB; {:.0} MiB before the build)",
            n as f64 / build_s,
            rayon::current_num_threads(),
            peak_rss_mib(),
            (g.len() * 4) as f64 / 1048576.0,
            rss0
        )?;
        graph
    };
    // The candidate stage's own question: is the mate (query i's mate is
    // row i) in an HNSW list of a given length?
    outln!("| candidate list | mate found, exact | mate found, HNSW (ef = list) | HNSW queries/s, 2 threads |")?;
    outln!("|---|---|---|---|")?;
    for share in [0.001, 0.01] {
        let list = ((share * n as f64).round() as usize).max(1);
        if list > 10_000 {
            continue;
        }
        let exact_hits = queries
            .par_iter()
            .enumerate()
            .filter(|(i, q)| {
                let target = whorl::embed::dot(q, &g[i * dim..(i + 1) * dim]);
                g.chunks_exact(dim).filter(|row| whorl::embed::dot(q, row) > target).count() < list
            })
            .count();
        let (found, secs) =
            timed(2, || queries.par_iter().map(|q| graph.search(q, list, list)).collect::<Result<Vec<_>, _>>())?;
        let hits = found?.iter().enumerate().filter(|(i, f)| f.iter().any(|h| h.id as usize == *i)).count();
        let nq = queries.len() as f64;
        outln!(
            "| {list} ({:.1}%) | {:.1}% | {:.1}% | {:.0} |",
            100.0 * share,
            100.0 * exact_hits as f64 / nq,
            100.0 * hits as f64 / nq,
            nq / secs
        )?;
    }
    outln!("| ef | recall@{k} | queries/s, 1 thread | queries/s, 2 threads |")?;
    outln!("|---|---|---|---|")?;
    let mut curve = Vec::new();
    for &ef in &a.ef {
        let search = || queries.par_iter().map(|q| graph.search(q, k, ef)).collect::<Result<Vec<_>, _>>();
        let (r1, s1) = timed(1, search)?;
        let (_, s2) = timed(2, search)?;
        let r = recall(&r1?, &truth, k);
        let (q1, q2) = (queries.len() as f64 / s1, queries.len() as f64 / s2);
        outln!("| {ef} | {r:.4} | {q1:.0} | {q2:.0} |")?;
        curve.push((ef, r, q1, q2));
    }
    for target in [0.90, 0.95, 0.99] {
        match curve.iter().find(|c| c.1 >= target) {
            Some(c) => outln!(
                "recall >= {target}: ef {} (recall {:.4}): {:.0} q/s on 1 thread, {:.0} on 2",
                c.0,
                c.1,
                c.2,
                c.3
            )?,
            None => outln!("recall >= {target}: not reached with the ef values tried")?,
        }
    }
    // Persistence: save, reload with the vectors memory-mapped, same answers.
    let dir = &a.index_dir;
    if !a.reuse_index {
        let _ = std::fs::remove_dir_all(dir);
    }
    let t0 = Instant::now();
    if !a.reuse_index {
        let meta =
            IndexMeta { format: 1, embedding: e.id(), count: n, vectors_crc32c: crc, params, hnsw_base: String::new() };
        saved::save(&graph, dir, "gallery", meta)?;
    }
    let save_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (reloaded, _) = saved::load(dir, "gallery", true, Some((&e.id(), crc)))?;
    let load_s = t0.elapsed().as_secs_f64();
    let ef = a.ef.iter().copied().find(|&ef| ef >= 64).unwrap_or(64);
    let same = queries.iter().take(200).all(|q| {
        let (x, y) = (graph.search(q, k, ef), reloaded.search(q, k, ef));
        matches!((x, y), (Ok(x), Ok(y)) if x.iter().map(|h| h.id).eq(y.iter().map(|h| h.id)))
    });
    outln!(
        "save: {save_s:.1} s; reload (mmap of vectors): {load_s:.2} s; same top-{k} after reload on 200 queries: {same}"
    )?;
    if let Some(out) = &a.export {
        export(out, g, dim, &queries, &truth, k)?;
        let curve: Vec<(usize, f64, f64, f64)> = curve.clone();
        let json = serde_json::json!({ "k": k, "build_seconds": build_seconds, "curve": curve });
        std::fs::write(out.join("whorl-curve.json"), serde_json::to_vec_pretty(&json)?)?;
        outln!("exported gallery, queries and exact top-{k} to {}", out.display())?;
    }
    Ok(())
}

fn write_fvecs(path: &Path, rows: &mut dyn Iterator<Item = &[f32]>) -> Result<()> {
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    for r in rows {
        f.write_all(&(r.len() as i32).to_le_bytes())?;
        for v in r {
            f.write_all(&v.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}

/// Writes `gallery.fvecs`, `queries.fvecs` and `groundtruth.ivecs` (TEXMEX format).
fn export(dir: &Path, g: &[f32], dim: usize, queries: &[&Vec<f32>], truth: &[Vec<Hit>], k: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_fvecs(&dir.join("gallery.fvecs"), &mut g.chunks_exact(dim))?;
    write_fvecs(&dir.join("queries.fvecs"), &mut queries.iter().map(|q| q.as_slice()))?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("groundtruth.ivecs"))?);
    for t in truth {
        f.write_all(&(k as i32).to_le_bytes())?;
        for h in t.iter().take(k) {
            f.write_all(&(h.id as i32).to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}
