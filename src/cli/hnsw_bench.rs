//! HNSW measurements for `whorl eval-candidates --hnsw`, side by side in
//! one run on the same vectors: whorl's graphs over f32, f16 and int8
//! vectors (and int8 with an f32 re-rank of the list) and hnsw_rs: build
//! time, reachability, self-search, recall@k against exact search and
//! queries per second on 1 and 2 threads per ef, the serving path's mate
//! recall, resident bytes, and an export for the peer libraries
//! (benches/peers).

use super::candidates::CandidatesArgs;
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use whorl::embed::Embedder;
use whorl::index::{
    AlignedBytes, Bytes, CandidateIndex, Hit, HnswRsGraph, IndexParams, MappedGraph, VectorKind, VectorsLayout,
    exact_search, saved, vectors_crc,
};

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
    Ok(timed_cpu(threads, work)?.0)
}

/// Runs `work` on `threads` threads: its result, wall seconds, and CPU
/// seconds of the process meanwhile (on a shared machine, the CPU seconds
/// of a one-thread run are the steadier cost).
fn timed_cpu<T: Send>(threads: usize, work: impl Fn() -> T + Send + Sync) -> Result<((T, f64), f64)> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let (t0, c0) = (Instant::now(), cpu_time::ProcessTime::now());
    let out = pool.install(work);
    Ok(((out, t0.elapsed().as_secs_f64()), c0.elapsed().as_secs_f64()))
}

/// One implementation under test.
struct Contender {
    name: String,
    index: Box<dyn CandidateIndex>,
    /// Re-rank the `ef` list by exact f32 inner products before taking k.
    rerank: bool,
    build_seconds: f64,
    build_cpu_seconds: f64,
    resident_bytes: usize,
}

/// The vectors `g` stored as `kind`, in memory laid out like a shard section.
fn stored(g: &[f32], dim: usize, kind: VectorKind) -> (Bytes, VectorsLayout) {
    let mut values = Vec::with_capacity(g.len() * kind.value_bytes());
    let scales: Vec<f32> = g.chunks_exact(dim).map(|row| kind.encode(row, &mut values)).collect();
    let values_len = values.len();
    let at = values_len.next_multiple_of(64);
    let mut all = values;
    all.resize(at, 0);
    if kind == VectorKind::I8 {
        all.extend_from_slice(bytemuck::cast_slice(&scales));
    }
    let end = all.len();
    let layout = VectorsLayout { kind, dim, values: 0..values_len, scales: at..end };
    (Arc::new(AlignedBytes::new(&all)), layout)
}

fn build_contenders(a: &CandidatesArgs, g: &[f32], dim: usize) -> Result<Vec<Contender>> {
    let n = g.len() / dim;
    let params = IndexParams { max_connections: a.m, ef_construction: a.ef_construction };
    let rows: Vec<u32> = (0..n as u32).collect();
    let mut out = Vec::new();
    for name in &a.impls {
        let bar = super::progress(n as u64, &format!("building {name}"));
        let (t0, c0) = (Instant::now(), cpu_time::ProcessTime::now());
        let (index, resident): (Box<dyn CandidateIndex>, usize) = if name == "hnsw_rs" {
            let graph = HnswRsGraph::build(g, dim, &params, 10_000, |done| bar.set_position(done as u64))?;
            (Box::new(graph), 0)
        } else {
            let kind = name
                .strip_prefix("whorl-")
                .and_then(|k| VectorKind::parse(k.trim_end_matches("+rerank")))
                .with_context(|| {
                    format!(
                        "unknown implementation {name} (whorl-f32, whorl-f16, whorl-int8, whorl-int8+rerank, hnsw_rs)"
                    )
                })?;
            let (bytes, layout) = stored(g, dim, kind);
            let (graph, reach) =
                MappedGraph::build(bytes, layout, &rows, 0, &params, &mut |d, _| bar.set_position(d as u64))?;
            bar.finish_and_clear();
            println!(
                "{name}: not found by a search for themselves {} (linked in), unreachable after the inserts {}, linked in by the repair {}, unreachable after it {} (walk of the saved graph: {})",
                reach.self_missed,
                reach.unreachable_before,
                reach.repaired,
                reach.unreachable_after,
                graph.unreachable()?
            );
            let resident = graph.resident_bytes();
            (Box::new(graph), resident)
        };
        let (build_seconds, build_cpu_seconds) = (t0.elapsed().as_secs_f64(), c0.elapsed().as_secs_f64());
        bar.finish_and_clear();
        println!(
            "{name}: build {build_seconds:.1} s ({build_cpu_seconds:.1} CPU s) on {} threads ({:.0} vectors/s); peak RSS so far {:.0} MiB",
            rayon::current_num_threads(),
            n as f64 / build_seconds,
            peak_rss_mib()
        );
        out.push(Contender {
            name: name.clone(),
            index,
            rerank: name.ends_with("+rerank"),
            build_seconds,
            build_cpu_seconds,
            resident_bytes: resident,
        });
    }
    Ok(out)
}

/// The contender's top `k` for `q` with list `ef` (re-ranked by f32 when asked).
fn query(c: &Contender, g: &[f32], dim: usize, q: &[f32], k: usize, ef: usize) -> Vec<Hit> {
    if !c.rerank {
        return c.index.search(q, k, ef).unwrap_or_default();
    }
    let mut list = c.index.search(q, ef.max(k), ef).unwrap_or_default();
    for h in &mut list {
        let i = h.id as usize;
        h.score = whorl::embed::dot(q, &g[i * dim..(i + 1) * dim]);
    }
    list.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    list.truncate(k);
    list
}

pub fn run(a: &CandidatesArgs, e: &Embedder, g: &[f32], probes: &[Vec<f32>]) -> Result<()> {
    let dim = e.dim();
    let n = g.len() / dim;
    let queries: Vec<&Vec<f32>> = probes.iter().take(a.queries).collect();
    if queries.is_empty() {
        bail!("no queries");
    }
    let k = a.k;
    println!(
        "\nHNSW over {n} vectors of {dim} dims (M {}, ef_construction {}), {} queries, k {k}; SIMD kernels: {:?}",
        a.m,
        a.ef_construction,
        queries.len(),
        whorl::index::kernels::kernels().tier
    );
    let (truth, secs) = timed(2, || queries.par_iter().map(|q| exact_search(g, dim, q, k, None)).collect::<Vec<_>>())?;
    println!("exact search: {:.1} queries/s on 2 threads", queries.len() as f64 / secs);
    let contenders = build_contenders(a, g, dim)?;
    let nq = queries.len() as f64;

    // The serving path's k and ef: as given, or the server's defaults.
    let server = whorl::search::SearchConfig::default();
    let or_server = |v: &[usize], d: usize| if v.is_empty() { vec![d] } else { v.to_vec() };
    let serve_k = or_server(&a.serve_k, server.candidates_per_finger);
    let serve_ef = or_server(&a.serve_ef, server.ef);
    let efs = [k, whorl::index::build::REPAIR_EF, serve_ef[0]];
    println!(
        "\n| implementation | bytes per vector resident (vectors + graph) | self-search: point found as its own top-1, ef {} / {} / {} |",
        efs[0], efs[1], efs[2]
    );
    println!("|---|---|---|");
    let sample = n.min(20_000);
    for c in &contenders {
        let rates: Vec<String> = efs
            .iter()
            .map(|&ef| {
                let found = (0..sample)
                    .into_par_iter()
                    .filter(|&i| {
                        // Found: itself, or a duplicate of it ranked first.
                        let row = |j: usize| &g[j * dim..(j + 1) * dim];
                        let top = c.index.search(row(i), 1, ef).ok().and_then(|h| h.first().map(|h| h.id as usize));
                        top.is_some_and(|j| j == i || row(j) == row(i))
                    })
                    .count();
                format!("{:.2}%", 100.0 * found as f64 / sample as f64)
            })
            .collect();
        let bytes =
            if c.resident_bytes > 0 { format!("{:.0}", c.resident_bytes as f64 / n as f64) } else { "n/a".into() };
        println!("| {} | {bytes} | {} (of {sample}) |", c.name, rates.join(" / "));
    }

    // The serving path: a partition searched with the server's k and ef;
    // query i's mate is row i. Exact search keeps the mate at list length k
    // when fewer than k rows score above it.
    println!("\nserving path: probes whose mate is in a list of k candidates searched with ef");
    println!("| implementation | k | ef | mate found | exact search, same list length | queries/s, 2 threads |");
    println!("|---|---|---|---|---|---|");
    let above: Vec<usize> = queries
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let target = whorl::embed::dot(q, &g[i * dim..(i + 1) * dim]);
            g.chunks_exact(dim).filter(|row| whorl::embed::dot(q, row) > target).count()
        })
        .collect();
    for c in &contenders {
        for &sk in &serve_k {
            let exact_mates = above.iter().filter(|&&r| r < sk).count();
            for &sef in &serve_ef {
                let (found, secs) =
                    timed(2, || queries.par_iter().map(|q| query(c, g, dim, q, sk, sef)).collect::<Vec<_>>())?;
                let hits = found.iter().enumerate().filter(|(i, f)| f.iter().any(|h| h.id as usize == *i)).count();
                outln!(
                    "| {} | {sk} | {sef} | {:.1}% | {:.1}% | {:.0} |",
                    c.name,
                    100.0 * hits as f64 / nq,
                    100.0 * exact_mates as f64 / nq,
                    nq / secs
                )?;
            }
        }
    }

    let mut curves = serde_json::Map::new();
    for c in &contenders {
        println!("\n{}: build {:.1} s", c.name, c.build_seconds);
        println!("| ef | recall@{k} | queries/s, 1 thread | queries/s, 2 threads | queries per CPU second, 1 thread |");
        println!("|---|---|---|---|---|");
        let mut curve = Vec::new();
        for &ef in &a.ef {
            let search = || queries.par_iter().map(|q| query(c, g, dim, q, k, ef)).collect::<Vec<_>>();
            let ((r1, mut s1), mut cpu1) = timed_cpu(1, search)?;
            let (_, mut s2) = timed(2, search)?;
            for _ in 1..a.repeats {
                let ((_, s), cpu) = timed_cpu(1, search)?;
                (s1, cpu1) = (s1.min(s), cpu1.min(cpu));
                s2 = s2.min(timed(2, search)?.1);
            }
            let r = recall(&r1, &truth, k);
            let (q1, q2, qc) = (nq / s1, nq / s2, nq / cpu1.max(1e-9));
            println!("| {ef} | {r:.4} | {q1:.0} | {q2:.0} | {qc:.0} |");
            curve.push((ef, r, q1, q2, qc));
        }
        curves.insert(
            c.name.clone(),
            serde_json::json!({
                "build_seconds": c.build_seconds,
                "build_cpu_seconds": c.build_cpu_seconds,
                "resident_bytes": c.resident_bytes,
                "curve": curve
            }),
        );
    }
    persistence(a, e, g, dim, &queries, k)?;
    if let Some(out) = &a.export {
        export(out, g, dim, &queries, &truth, k)?;
        let json = serde_json::json!({
            "k": k,
            "threads": rayon::current_num_threads(),
            "repeats": a.repeats,
            "contenders": curves
        });
        std::fs::write(out.join("whorl-curve.json"), serde_json::to_vec_pretty(&json)?)?;
        outln!("exported gallery, queries and exact top-{k} to {}", out.display())?;
    }
    Ok(())
}

/// hnsw_rs's save and reload (whorl's graphs need neither: they are
/// sections of the shard, mapped as they are).
fn persistence(a: &CandidatesArgs, e: &Embedder, g: &[f32], dim: usize, queries: &[&Vec<f32>], k: usize) -> Result<()> {
    if !a.impls.iter().any(|x| x == "hnsw_rs") || !a.hnsw_rs_reload {
        return Ok(());
    }
    let params = IndexParams { max_connections: a.m, ef_construction: a.ef_construction };
    let graph = HnswRsGraph::build(g, dim, &params, 10_000, |_| {})?;
    let dir = &a.index_dir;
    let _ = std::fs::remove_dir_all(dir);
    let crc = vectors_crc(g);
    let t0 = Instant::now();
    saved::save_set(&[(0, &graph)], dir, "gallery", e.id(), crc, params)?;
    let save_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let (reloaded, _) = saved::load_set(dir, "gallery", true, (&e.id(), crc, &[(0, g.len() / dim)]))?;
    let load_s = t0.elapsed().as_secs_f64();
    let same = queries.iter().take(200).all(|q| {
        let (x, y) = (graph.search(q, k, 64), reloaded[0].1.search(q, k, 64));
        matches!((x, y), (Ok(x), Ok(y)) if x.iter().map(|h| h.id).eq(y.iter().map(|h| h.id)))
    });
    println!(
        "\nhnsw_rs: save {save_s:.1} s; checked reload (CRC, mmap of vectors) {load_s:.2} s; same top-{k}: {same}"
    );
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
