//! `whorl eval-candidates`: hit rate against penetration of the embedding
//! (exact search) and, later, of the HNSW index.

use anyhow::{Result, bail};
use clap::Args;
use rayon::prelude::*;
use std::time::Instant;
use whorl::embed::Embedder;
use whorl::eval::candidates::{PENETRATIONS, exact_ranks, hit_rates};
use whorl::synth::{Synth, SynthParams};
use whorl::template::Template;

#[derive(Args)]
pub struct CandidatesArgs {
    /// Synthetic distractor fingers added to the real FVC2002 gallery.
    #[arg(long, default_value_t = 100_000)]
    pub(super) distractors: u64,
    /// Synthetic gallery sizes (fingers) to evaluate.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub(super) synthetic: Vec<u64>,
    /// Probes for the synthetic galleries (other impressions of this many gallery fingers).
    #[arg(long, default_value_t = 1000)]
    pub(super) probes: u64,
    /// Seed of the synthetic population.
    #[arg(long, default_value_t = 11)]
    pub(super) seed: u64,
    /// Embedding: `mph-w` (whitened pair histogram, default) or `mph-raw`.
    #[arg(long, default_value = "mph-w")]
    pub(super) method: String,
    /// Embedding model file (default: the built-in model).
    #[arg(long)]
    pub(super) model: Option<std::path::PathBuf>,
    /// Also build an HNSW index over the largest synthetic gallery and
    /// measure recall and queries per second.
    #[arg(long)]
    pub(super) hnsw: bool,
    /// HNSW neighbours per node (M).
    #[arg(long, default_value_t = 16)]
    pub(super) m: usize,
    /// HNSW ef at construction.
    #[arg(long, default_value_t = 200)]
    pub(super) ef_construction: usize,
    /// ef values to measure.
    #[arg(long, value_delimiter = ',', default_value = "10,16,24,32,48,64,96,128,192,256,384,512,768,1024")]
    pub(super) ef: Vec<usize>,
    /// k of recall@k.
    #[arg(long, default_value_t = 10)]
    pub(super) k: usize,
    /// Queries for the HNSW measurements.
    #[arg(long, default_value_t = 1000)]
    pub(super) queries: usize,
    /// Export the largest gallery, the queries and the exact top-k as
    /// .fvecs/.ivecs into this folder (for benches/peers).
    #[arg(long)]
    pub(super) export: Option<std::path::PathBuf>,
    /// Implementations measured side by side: whorl-f32, whorl-f16,
    /// whorl-int8, whorl-int8+rerank (the ef list re-ranked by f32), hnsw_rs.
    #[arg(long, value_delimiter = ',', default_value = "whorl-f32,whorl-f16,whorl-int8,whorl-int8+rerank,hnsw_rs")]
    pub(super) impls: Vec<String>,
    /// The HNSW measurement (`--hnsw`): list lengths k of its
    /// serving-path table (the server's `candidates_per_finger`); several
    /// values give mate recall against list length. None given: the
    /// server's default. The `--serving` measurement takes `--serving-k`.
    #[arg(long, value_delimiter = ',')]
    pub(super) serve_k: Vec<usize>,
    /// The HNSW measurement (`--hnsw`): ef of its serving-path table (the
    /// server's `ef`); several values give the approximate search's cost
    /// of keeping up with exact search. None given: the server's default.
    /// The `--serving` measurement takes `--serving-ef`.
    #[arg(long, value_delimiter = ',')]
    pub(super) serve_ef: Vec<usize>,
    /// Each timing of the ef curve is the best of this many runs (the
    /// machine is shared: the best run is the least disturbed one).
    #[arg(long, default_value_t = 3)]
    pub(super) repeats: usize,
    /// Also time saving and the checked reload of an hnsw_rs index.
    #[arg(long)]
    pub(super) hnsw_rs_reload: bool,
    /// Also rank the synthetic probes by exhaustive MCC matching against a
    /// gallery of this many fingers: the ceiling of any candidate stage.
    #[arg(long)]
    pub(super) mcc_ceiling: Option<u64>,
    /// Folder for report.md and hit_rate.png.
    #[arg(long)]
    pub(super) out: Option<std::path::PathBuf>,
    /// Measure the serving path: build a gallery folder of this many
    /// one-finger synthetic subjects plus impression 1 of the FVC2002
    /// fingers, and search it as the server does (its k, ef, partitions),
    /// next to exact search over the same partitions at the same length.
    #[arg(long)]
    pub(super) serving: Option<u64>,
    /// Non-mated searches for the FPIR measured on the serving path
    /// (synthetic subjects never enrolled).
    #[arg(long, default_value_t = 3000)]
    pub(super) non_mated: u64,
    /// ef values (HNSW search breadth) to measure the serving path at; the
    /// first also gives the decisions table. None given: the server's
    /// default (`SearchConfig::default().ef`).
    #[arg(long, value_delimiter = ',')]
    pub(super) serving_ef: Vec<usize>,
    /// The serving path's `candidates_per_finger` (k). None given: the
    /// server's default.
    #[arg(long)]
    pub(super) serving_k: Option<usize>,
    /// The serving path's `verify_subjects` (phase 4; 0: the second pass
    /// off). None given: the server's default.
    #[arg(long)]
    pub(super) serving_verify: Option<usize>,
    /// HNSW neighbours per node (M) of the serving gallery's indexes.
    #[arg(long, default_value_t = whorl::index::IndexParams::default().max_connections)]
    pub(super) serving_m: usize,
    /// Where to build the serving gallery (reused when it holds one made with
    /// the same embedding and matcher; delete it to rebuild).
    #[arg(long, default_value = "target/eval-serving")]
    pub(super) serving_dir: std::path::PathBuf,
    /// Where to save the hnsw_rs index (reload time is measured from it).
    #[arg(long, default_value = "target/eval-candidates-index")]
    pub(super) index_dir: std::path::PathBuf,
}

fn embed_all(e: &Embedder, ts: &[Template]) -> Vec<f32> {
    let dim = e.dim();
    let mut out = vec![0f32; ts.len() * dim];
    out.par_chunks_mut(dim).zip(ts).for_each(|(row, t)| e.embed_into(t, row));
    out
}

/// Prints a table row and returns the curve (penetration %, hit rate %).
fn print_rates(name: &str, ranks: &[usize], size: usize, table: &mut String) -> Vec<(f64, f64)> {
    let rates = hit_rates(ranks, size, &PENETRATIONS);
    let cells: Vec<String> = rates.iter().map(|r| format!("{:.1}% ({})", 100.0 * r.hit_rate, r.list)).collect();
    let row = format!("| {name} | {size} | {} | {} |", ranks.len(), cells.join(" | "));
    println!("{row}");
    table.push_str(&row);
    table.push('\n');
    rates.iter().map(|r| (100.0 * r.penetration, 100.0 * r.hit_rate)).collect()
}

pub fn run(a: CandidatesArgs) -> Result<()> {
    use whorl::data::Split;
    use whorl::eval::candidates::RealSet;
    let e = super::embed::embedder(&a.method, a.model.as_deref())?;
    let synth = Synth::new(SynthParams::default(), a.seed);
    println!("embedding: {}", e.id());
    let mut table =
        String::from("| gallery | size | probes | 0.1% | 0.5% | 1% | 2% | 5% |\n|---|---|---|---|---|---|---|---|\n");
    print!("{table}");
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    // Real: impression 1 of each FVC2002 finger of a part plus distractors; impressions 2-8 probe.
    let mut real: Vec<(Split, RealSet)> = Vec::new();
    for split in [Split::Calibration, Split::HeldOut] {
        if let Some(dirs) = whorl::data::fvc2002_split(split)? {
            let dbs = dirs.iter().map(|d| whorl::eval::load_database(d)).collect::<Result<Vec<_>, _>>()?;
            real.push((split, RealSet::from_databases(&dbs)));
        }
    }
    // Synthetic galleries (impression 0 of fingers 0..n), embedded once: the
    // distractors are the first `distractors` of them.
    let mut cache: std::collections::HashMap<u64, Vec<f32>> = std::collections::HashMap::new();
    let mut gallery_of = |n: u64| -> Vec<f32> {
        if let Some(v) = cache.get(&n) {
            return v.clone();
        }
        let v = embed_stream(&e, &synth, n);
        cache.insert(n, v.clone());
        v
    };
    if !real.is_empty() && a.distractors > 0 {
        let t0 = Instant::now();
        let distractors = gallery_of(a.distractors);
        for (split, set) in &real {
            let mut g = embed_all(&e, &set.gallery.iter().map(|x| x.1.clone()).collect::<Vec<_>>());
            g.extend_from_slice(&distractors);
            let p: Vec<Vec<f32>> = set.probes.iter().map(|x| e.embed(&x.0)).collect();
            let mates: Vec<usize> = set.probes.iter().map(|x| x.1).collect();
            let ranks = exact_ranks(&g, e.dim(), &p, &mates);
            let name = format!("FVC2002 {} + synthetic distractors (exact)", split.describe());
            let c = print_rates(&name, &ranks, g.len() / e.dim(), &mut table);
            curves.push((format!("FVC2002 {}, {} distractors", split.describe(), a.distractors), c));
        }
        eprintln!("real: {:.1} s", t0.elapsed().as_secs_f64());
    } else if a.synthetic.is_empty() && a.serving.is_none() {
        bail!("no FVC2002 data and no synthetic galleries asked for");
    }
    let mut last = None;
    let mut ceiling: Option<String> = None;
    for &n in &a.synthetic {
        let t0 = Instant::now();
        let g = gallery_of(n);
        let np = a.probes.min(n);
        let probes: Vec<Vec<f32>> = synth.batch(0..np, 1..2).iter().map(|r| e.embed(&r.template)).collect();
        let mates: Vec<usize> = (0..np as usize).collect();
        let ranks = exact_ranks(&g, e.dim(), &probes, &mates);
        let c = print_rates("synthetic (exact)", &ranks, n as usize, &mut table);
        curves.push((format!("synthetic, {n} fingers"), c));
        eprintln!("synthetic {n}: {:.1} s", t0.elapsed().as_secs_f64());
        last = Some((g, probes));
    }
    if let Some(n) = a.mcc_ceiling {
        let ranks = mcc_ranks(&synth, n, a.probes.min(n));
        let first = ranks.iter().filter(|&&r| r == 0).count();
        let ci = whorl::eval::intervals::binomial(first as u64, ranks.len() as u64, 0.95);
        eprintln!("exhaustive MCC: mate ranked first for {} of {} probes ({})", first, ranks.len(), ci.pct(1));
        ceiling = Some(format!(
            "Exhaustive MCC matching of the same synthetic probes against {n} gallery fingers ranks the mate first for {first} of {} probes: {} % [95% CI]; the hit rates of that ranking are the last row of the table.\n",
            ranks.len(),
            ci.pct(1)
        ));
        let c = print_rates("synthetic, exhaustive MCC (ceiling)", &ranks, n as usize, &mut table);
        curves.push((format!("synthetic {n}, exhaustive MCC matching"), c));
    }
    let serving = match a.serving {
        Some(n) => Some(super::serving_eval::run(&a, &e, &synth, n, &real)?),
        None => None,
    };
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)?;
        let series: Vec<whorl::plot::Series> =
            curves.iter().map(|(n, p)| whorl::plot::Series { name: n, points: p.clone() }).collect();
        whorl::plot::line_chart(
            &out.join("hit_rate.png"),
            &format!("Mate in the candidate list ({})", e.id()),
            ("candidate list, % of the gallery (log)", whorl::plot::Scale::Log(0.08, 6.0)),
            ("probes whose mate is in the list, %", whorl::plot::Scale::Linear(50.0, 100.0)),
            &series,
        )?;
        let cmd: Vec<String> = std::env::args().collect();
        whorl::eval::report::write_keeping_notes(
            &out.join("report.md"),
            &format!(
                "# Candidate stage: hit rate against penetration\n\nCommand: `{}`  \nMachine: {}  \nDate: {}\n\nEmbedding: {}\n\n## What the models saw\n\n{}\n## Exact search: hit rate against penetration\n\nThe share of probes whose mate is among the nearest X% of the gallery by embedding (exact search; the list length in brackets). Real: the probes (impressions 2-8) of one part of FVC2002 with impression 1 of its 20 fingers hidden among {} synthetic distractors. Synthetic: impression 1 against impression 0 of every gallery finger.\n\n{table}\n{}\n![hit rate](hit_rate.png)\n\n{}",
                cmd.join(" "),
                super::machine(),
                super::today(),
                e.id(),
                whorl::eval::provenance::all(),
                a.distractors,
                ceiling.unwrap_or_default(),
                serving.unwrap_or_default()
            ),
        )?;
    }
    if a.hnsw {
        let Some((g, probes)) = last else { bail!("--hnsw needs a synthetic gallery") };
        super::hnsw_bench::run(&a, &e, &g, &probes)?;
    }
    Ok(())
}

/// Mate ranks of the synthetic probes under exhaustive MCC matching
/// against `n` gallery fingers: how well any candidate stage could do.
fn mcc_ranks(synth: &Synth, n: u64, probes: u64) -> Vec<usize> {
    use whorl::mcc::{Matcher, Scratch};
    let m = Matcher::default();
    let gallery: Vec<_> = synth.batch(0..n, 0..1).par_iter().map(|r| m.prepare(&r.template)).collect();
    let ps: Vec<_> = synth.batch(0..probes, 1..2).par_iter().map(|r| m.prepare(&r.template)).collect();
    ps.par_iter()
        .enumerate()
        .map_init(Scratch::new, |s, (i, p)| {
            let mate = m.score(p.view(), gallery[i].view(), s);
            gallery.iter().filter(|g| m.score(p.view(), g.view(), s) > mate).count()
        })
        .collect()
}

/// Embeddings of impression 0 of fingers 0..n, generated and embedded in
/// chunks so that templates never all sit in memory.
fn embed_stream(e: &Embedder, synth: &Synth, n: u64) -> Vec<f32> {
    let dim = e.dim();
    let mut out = Vec::with_capacity(n as usize * dim);
    let _ = synth.stream(0..n, 0..1, 20_000, |batch| -> Result<(), ()> {
        let ts: Vec<Template> = batch.into_iter().map(|r| r.template).collect();
        out.extend(embed_all(e, &ts));
        Ok(())
    });
    out
}
