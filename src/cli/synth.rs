//! `whorl synth` and `whorl synth-stats`.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use whorl::synth::stats::{TemplateStats, comparison_table};
use whorl::synth::{Synth, SynthParams, SynthRecord, pack::PackWriter};
use whorl::template::{self, Format, Template};

#[derive(Args)]
pub struct SynthArgs {
    /// Number of fingers.
    #[arg(long, default_value_t = 1000)]
    fingers: u64,
    /// Impressions per finger.
    #[arg(long, default_value_t = 2)]
    impressions: u32,
    /// Random seed: the same seed gives the same templates.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Write one pack file (`templates.wsyn`) instead of one ISO file per template.
    #[arg(long)]
    pack: bool,
    /// Id of the first finger (to extend a population).
    #[arg(long, default_value_t = 0)]
    first_finger: u64,
    /// Generator parameters as JSON (fields not given keep their defaults).
    #[arg(long)]
    params: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatsArgs {
    /// Folders of real templates (default: ../shared/data/fvc2002/DB*_B).
    #[arg(long)]
    real: Vec<PathBuf>,
    /// Synthetic fingers to generate for the comparison.
    #[arg(long, default_value_t = 500)]
    fingers: u64,
    /// Impressions per synthetic finger.
    #[arg(long, default_value_t = 8)]
    impressions: u32,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generator parameters as JSON.
    #[arg(long)]
    params: Option<PathBuf>,
}

pub fn load_params(path: Option<&Path>) -> Result<SynthParams> {
    match path {
        None => Ok(SynthParams::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing generator parameters {}", p.display()))
        }
    }
}

pub fn run(a: SynthArgs) -> Result<()> {
    if a.fingers == 0 || a.impressions == 0 {
        bail!("--fingers and --impressions must be at least 1");
    }
    let synth = Synth::new(load_params(a.params.as_deref())?, a.seed);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let total = a.fingers * u64::from(a.impressions);
    let bar = super::progress(total, "synthesising");
    let start = Instant::now();
    let fingers = a.first_finger..a.first_finger + a.fingers;
    let chunk = 2048;
    if a.pack {
        let path = a.out.join("templates.wsyn");
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = PackWriter::new(BufWriter::with_capacity(1 << 20, file))?;
        synth.stream(fingers, 0..a.impressions, chunk, |batch: Vec<SynthRecord>| -> Result<()> {
            for r in &batch {
                w.push(r.finger, r.impression, &r.template)?;
            }
            bar.inc(batch.len() as u64);
            Ok(())
        })?;
        w.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    } else {
        synth.stream(fingers, 0..a.impressions, chunk, |batch: Vec<SynthRecord>| -> Result<()> {
            use rayon::prelude::*;
            batch.par_iter().try_for_each(|r| write_iso(&a.out, r))?;
            bar.inc(batch.len() as u64);
            Ok(())
        })?;
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {total} templates ({} fingers x {} impressions, seed {}) to {} in {secs:.1} s ({:.0} templates/s)",
        a.fingers,
        a.impressions,
        a.seed,
        a.out.display(),
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// File name of a synthetic template, FVC style: `FINGER_IMPRESSION.iso`, both 1-based.
pub fn iso_name(finger: u64, impression: u32) -> String {
    format!("{}_{}.iso", finger + 1, impression + 1)
}

fn write_iso(dir: &Path, r: &SynthRecord) -> Result<()> {
    let bytes = template::write(std::slice::from_ref(&r.template), Format::Iso2005)?;
    let path = dir.join(iso_name(r.finger, r.impression));
    let mut f = BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    f.write_all(&bytes)?;
    f.flush()?;
    Ok(())
}

/// Every template in the ISO files of `dirs`.
pub fn read_dirs(dirs: &[PathBuf]) -> Result<Vec<Template>> {
    let mut out = Vec::new();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("listing {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
            out.extend(template::parse(&bytes).with_context(|| format!("parsing {}", f.display()))?);
        }
    }
    Ok(out)
}

pub fn stats(a: StatsArgs) -> Result<()> {
    let dirs = if a.real.is_empty() { whorl::data::fvc2002_dirs() } else { a.real.clone() };
    if dirs.is_empty() {
        bail!("no real templates: pass --real DIR or set WHORL_TEST_DATA to the shared data folder");
    }
    let real = read_dirs(&dirs)?;
    let synth = Synth::new(load_params(a.params.as_deref())?, a.seed);
    let records = synth.batch(0..a.fingers, 0..a.impressions);
    let synthetic: Vec<&Template> = records.iter().map(|r| &r.template).collect();
    let rs = TemplateStats::of(&real);
    let ss = TemplateStats::of(synthetic);
    println!("{}", comparison_table(&[("real (FVC2002 DB1-4)", &rs), ("synthetic (defaults)", &ss)]));
    Ok(())
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Synthetic databases to generate (each with its own seed). Each has
    /// the real databases' size, so that rates over the same numbers of
    /// comparisons are compared.
    #[arg(long, default_value_t = 20)]
    dbs: u64,
    /// Fingers per synthetic database (FVC2002 B sets have 10).
    #[arg(long, default_value_t = 10)]
    fingers: u64,
    /// Impressions per finger.
    #[arg(long, default_value_t = 8)]
    impressions: u32,
    /// Base seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generator parameters as JSON.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Folders of real templates (default: ../shared/data/fvc2002/DB*_B).
    #[arg(long)]
    real: Vec<PathBuf>,
    /// Output folder for report.md and scores.png.
    #[arg(long, default_value = "whorl-calibration")]
    out: PathBuf,
    /// Search the capture-noise parameters (jitter, distortion, placement,
    /// rotation) for the score distributions closest to the real ones, and
    /// print the best parameters as JSON.
    #[arg(long)]
    search: bool,
    /// Coordinate-search rounds for --search.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Genuine and impostor scores of a set of databases, pooled.
fn pooled(all: &[whorl::eval::DbScores]) -> (Vec<f32>, Vec<f32>) {
    let g = all.iter().flat_map(|s| s.genuine.iter().map(|p| p.2)).collect();
    let i = all.iter().flat_map(|s| s.impostor.iter().map(|p| p.2)).collect();
    (g, i)
}

fn summary(v: &[f32]) -> String {
    use whorl::synth::stats::quantile;
    let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
    format!(
        "{mean:.3} ({:.3}/{:.3}/{:.3}/{:.3}/{:.3})",
        quantile(v, 0.05),
        quantile(v, 0.25),
        quantile(v, 0.5),
        quantile(v, 0.75),
        quantile(v, 0.95)
    )
}

/// Kolmogorov-Smirnov distance between two samples.
pub fn ks(a: &[f32], b: &[f32]) -> f64 {
    let mut x = a.to_vec();
    let mut y = b.to_vec();
    x.sort_by(f32::total_cmp);
    y.sort_by(f32::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < x.len() && j < y.len() {
        let v = x[i].min(y[j]);
        while i < x.len() && x[i] <= v {
            i += 1;
        }
        while j < y.len() && y[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / x.len() as f64 - j as f64 / y.len() as f64).abs());
    }
    d
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    use whorl::eval::{self, report};
    use whorl::mcc::Matcher;
    let dirs = if a.real.is_empty() { whorl::data::fvc2002_dirs() } else { a.real.clone() };
    if dirs.is_empty() {
        bail!("no real templates: pass --real DIR or set WHORL_TEST_DATA");
    }
    let mut params = load_params(a.params.as_deref())?;
    let matcher = Matcher::default();
    let real: Vec<_> = dirs
        .iter()
        .map(|d| eval::load_database(d).map(|db| eval::evaluate(&matcher, &db)))
        .collect::<Result<_, _>>()?;
    let (rg, ri) = pooled(&real);
    let run = |params: &SynthParams| -> Vec<eval::DbScores> {
        (0..a.dbs)
            .map(|k| {
                let s = Synth::new(params.clone(), a.seed.wrapping_add(k));
                let db = eval::Database::from_synthetic(
                    &format!("synthetic {}", k + 1),
                    s.batch(0..a.fingers, 0..a.impressions),
                );
                eval::evaluate(&matcher, &db)
            })
            .collect()
    };
    if a.search {
        let ra = report::average(&real);
        params = search(&params, a.rounds, |p| {
            let scores = run(p);
            let (g, i) = pooled(&scores);
            let sa = report::average(&scores);
            let rates = (sa.eer - ra.eer).abs() + (sa.fmr100 - ra.fmr100).abs() + (sa.fmr1000 - ra.fmr1000).abs();
            ks(&rg, &g) + ks(&ri, &i) + 6.0 * rates
        });
        println!("best parameters:\n{}", serde_json::to_string_pretty(&params)?);
    }
    let synth = run(&params);
    let (sg, si) = pooled(&synth);
    let (ra, sa) = (report::average(&real), report::average(&synth));
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let mut md = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        md,
        "| | real (FVC2002 DB1-4) | synthetic ({} dbs x {} fingers x {} impressions) |",
        a.dbs, a.fingers, a.impressions
    );
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(md, "| average EER % | {} | {} |", pct(ra.eer), pct(sa.eer));
    let _ = writeln!(md, "| average FMR100 % | {} | {} |", pct(ra.fmr100), pct(sa.fmr100));
    let _ = writeln!(md, "| average FMR1000 % | {} | {} |", pct(ra.fmr1000), pct(sa.fmr1000));
    let _ = writeln!(md, "| average ZeroFMR % | {} | {} |", pct(ra.zero_fmr), pct(sa.zero_fmr));
    let _ = writeln!(md, "| genuine score mean (q5/q25/q50/q75/q95) | {} | {} |", summary(&rg), summary(&sg));
    let _ = writeln!(md, "| impostor score mean (q5/q25/q50/q75/q95) | {} | {} |", summary(&ri), summary(&si));
    let _ = writeln!(md, "| KS distance, genuine / impostor | | {:.3} / {:.3} |", ks(&rg, &sg), ks(&ri, &si));
    println!("{md}");
    std::fs::create_dir_all(&a.out)?;
    let (hi, bins) = (0.7, 70);
    let series = [
        ("real genuine", whorl::plot::histogram(&rg, 0.0, hi, bins)),
        ("synthetic genuine", whorl::plot::histogram(&sg, 0.0, hi, bins)),
        ("real impostor", whorl::plot::histogram(&ri, 0.0, hi, bins)),
        ("synthetic impostor", whorl::plot::histogram(&si, 0.0, hi, bins)),
    ];
    let series: Vec<whorl::plot::Series> =
        series.iter().map(|(n, p)| whorl::plot::Series { name: n, points: p.clone() }).collect();
    whorl::plot::line_chart(
        &a.out.join("scores.png"),
        "MCC score distributions: real FVC2002 vs synthetic",
        ("score (bins of 0.01)", whorl::plot::Scale::Linear(0.0, hi)),
        ("share of comparisons (log)", whorl::plot::Scale::Log(1e-4, 1.0)),
        &series,
    )?;
    let cmd: Vec<String> = std::env::args().collect();
    std::fs::write(
        a.out.join("report.md"),
        format!("# Synthetic realism: match scores\n\nCommand: `{}`\n\n{md}\n![scores](scores.png)\n", cmd.join(" ")),
    )?;
    Ok(())
}

/// Coordinate search over the capture-noise knobs of `start` (those that
/// leave the template statistics of `synth-stats` alone), minimising
/// `cost`: each round tries, for each knob, a few multiples of its value.
fn search(start: &SynthParams, rounds: usize, cost: impl Fn(&SynthParams) -> f64) -> SynthParams {
    type Knob = (&'static str, fn(&mut SynthParams) -> &mut f32);
    let knobs: [Knob; 6] = [
        ("position_jitter", |p| &mut p.position_jitter),
        ("angle_jitter", |p| &mut p.angle_jitter),
        ("distortion_sd", |p| &mut p.distortion_sd),
        ("distortion_scale", |p| &mut p.distortion_scale),
        ("placement_sd", |p| &mut p.placement_sd),
        ("noise_spread", |p| &mut p.noise_spread),
    ];
    let mut best = start.clone();
    let mut best_cost = cost(&best);
    eprintln!("start: cost {best_cost:.4}");
    for round in 0..rounds {
        let factors: &[f32] = if round == 0 { &[0.25, 0.5, 0.75, 1.5, 2.0] } else { &[0.7, 0.85, 1.15, 1.4] };
        for (name, get) in knobs {
            let base = *get(&mut best.clone());
            // A knob at zero moves by steps instead of factors.
            let tries: Vec<f32> =
                if base == 0.0 { vec![0.1, 0.25, 0.5] } else { factors.iter().map(|f| base * f).collect() };
            for v in tries {
                let mut p = best.clone();
                *get(&mut p) = v;
                let c = cost(&p);
                if c < best_cost {
                    eprintln!("round {round}: {name} {base:.3} -> {v:.3}: cost {best_cost:.4} -> {c:.4}");
                    best_cost = c;
                    best = p;
                }
            }
        }
    }
    best
}
