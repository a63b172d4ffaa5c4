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
    use whorl::data::Split;
    let synth = Synth::new(load_params(a.params.as_deref())?, a.seed);
    let records = synth.batch(0..a.fingers, 0..a.impressions);
    let ss = TemplateStats::of(records.iter().map(|r| &r.template));
    if !a.real.is_empty() {
        let rs = TemplateStats::of(&read_dirs(&a.real)?);
        println!("{}", comparison_table(&[("real (--real)", &rs), ("synthetic", &ss)]));
        return Ok(());
    }
    let cal = whorl::data::fvc2002_split(Split::Calibration)?
        .context("no real templates: pass --real DIR or set WHORL_TEST_DATA to the shared data folder")?;
    let held = whorl::data::fvc2002_split(Split::HeldOut)?.unwrap_or_default();
    let (cs, hs) = (TemplateStats::of(&read_dirs(&cal)?), TemplateStats::of(&read_dirs(&held)?));
    println!(
        "{}",
        comparison_table(&[
            ("real, calibration part (DB1_B+DB2_B): the target", &cs),
            ("synthetic", &ss),
            ("real, held-out part (DB3_B+DB4_B): not a target", &hs)
        ])
    );
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
    /// Folders of real templates to calibrate against (default: the
    /// calibration part of FVC2002, DB1_B and DB2_B; the held-out part is
    /// shown beside it, never used as a target).
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

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    use whorl::data::Split;
    use whorl::eval;
    use whorl::mcc::Matcher;
    use whorl::synth::calibrate::{self as cal, Shape};
    let load = |dirs: &[PathBuf]| -> Result<Vec<eval::DbScores>> {
        let matcher = Matcher::default();
        Ok(dirs
            .iter()
            .map(|d| eval::load_database(d).map(|db| eval::evaluate(&matcher, &db)))
            .collect::<Result<_, _>>()?)
    };
    let (target, held_out) = if a.real.is_empty() {
        let cal = whorl::data::fvc2002_split(Split::Calibration)?
            .context("no real templates: pass --real DIR or set WHORL_TEST_DATA")?;
        (load(&cal)?, load(&whorl::data::fvc2002_split(Split::HeldOut)?.unwrap_or_default())?)
    } else {
        (load(&a.real)?, Vec::new())
    };
    let mut params = load_params(a.params.as_deref())?;
    let matcher = Matcher::default();
    let shape = Shape { dbs: a.dbs, fingers: a.fingers, impressions: a.impressions, seed: a.seed };
    if a.search {
        params = cal::search(
            &params,
            a.rounds,
            |p| cal::cost(&target, &cal::synthetic_scores(&matcher, p, shape)),
            |line| eprintln!("{line}"),
        );
        println!("best parameters:\n{}", serde_json::to_string_pretty(&params)?);
    }
    let synth = cal::synthetic_scores(&matcher, &params, shape);
    let target_name =
        if a.real.is_empty() { "real, calibration part (DB1_B+DB2_B): the target" } else { "real (--real)" };
    let synth_name = format!("synthetic ({} dbs x {} fingers x {} impressions)", a.dbs, a.fingers, a.impressions);
    let mut columns: Vec<(&str, &[eval::DbScores])> = vec![(target_name, &target), (&synth_name, &synth)];
    if !held_out.is_empty() {
        columns.push(("real, held-out part (DB3_B+DB4_B): not a target", &held_out));
    }
    let md = cal::comparison(&columns);
    println!("{md}");
    std::fs::create_dir_all(&a.out)?;
    let (hi, bins) = (0.7, 70);
    let (rg, ri) = cal::pooled(&target);
    let (sg, si) = cal::pooled(&synth);
    let series = [
        ("real genuine (calibration part)", whorl::plot::histogram(&rg, 0.0, hi, bins)),
        ("synthetic genuine", whorl::plot::histogram(&sg, 0.0, hi, bins)),
        ("real impostor (calibration part)", whorl::plot::histogram(&ri, 0.0, hi, bins)),
        ("synthetic impostor", whorl::plot::histogram(&si, 0.0, hi, bins)),
    ];
    let series: Vec<whorl::plot::Series> =
        series.iter().map(|(n, p)| whorl::plot::Series { name: n, points: p.clone() }).collect();
    whorl::plot::line_chart(
        &a.out.join("scores.png"),
        "MCC score distributions: real FVC2002 (calibration part) vs synthetic",
        ("score (bins of 0.01)", whorl::plot::Scale::Linear(0.0, hi)),
        ("share of comparisons (log)", whorl::plot::Scale::Log(1e-4, 1.0)),
        &series,
    )?;
    let cmd: Vec<String> = std::env::args().collect();
    std::fs::write(
        a.out.join("report.md"),
        format!(
            "# Synthetic realism: match scores\n\nCommand: `{}`  \nMachine: {}  \nDate: {}\n\n{}\n\n{md}\n![scores](scores.png)\n",
            cmd.join(" "),
            super::machine(),
            super::today(),
            whorl::eval::provenance::GENERATOR
        ),
    )?;
    Ok(())
}
