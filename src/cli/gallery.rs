//! `whorl build | info | verify | compact | migrate | open-time`: operating gallery folders.

use super::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions, Gallery, GalleryOptions, Manifest};
use whorl::index::{IndexKind, IndexParams, VectorKind};
use whorl::mcc::Matcher;
use whorl::shard::Shard;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Template};

#[derive(Args)]
pub struct BuildArgs {
    /// Template files, folders of them, or synthetic packs (.wsyn). The
    /// subject id is the file name before its last '_' (FVC style) or the
    /// whole stem; a pack's subject is its finger id.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Build from this many synthetic templates instead (impression 0 of
    /// each finger; subjects are named S000000000, S000000001, ...).
    #[arg(long, conflicts_with = "input")]
    synth: Option<u64>,
    /// Fingers per synthetic subject (1-10, positions 1..F; 1 spreads
    /// one-finger subjects over all ten positions).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    fingers_per_subject: u32,
    /// Seed of the synthetic fingers.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Output gallery folder (must not hold a gallery).
    #[arg(long)]
    out: PathBuf,
    /// Templates per shard.
    #[arg(long, default_value_t = 1_000_000)]
    shard_size: usize,
    /// Store embeddings as f16 (same as `--vectors f16`).
    #[arg(long)]
    f16: bool,
    /// How embeddings are stored: int8 (a quarter of f32's bytes, same
    /// recall: benches/reports/index/), f16 or f32.
    #[arg(long, default_value = "int8", value_parser = parse_vectors)]
    vectors: VectorKind,
    /// HNSW implementation the gallery is built for: whorl (graphs inside
    /// the shards) or hnsw_rs (also its files beside them).
    #[arg(long, default_value = "whorl", value_parser = parse_index)]
    index: IndexKind,
    /// HNSW neighbours per node.
    #[arg(long, default_value_t = 32)]
    m: usize,
    /// HNSW ef at construction.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
}

#[derive(Args)]
pub struct GalleryArgs {
    /// The gallery folder.
    gallery: PathBuf,
    /// HNSW implementation to open it with (open-time, compact).
    #[arg(long, default_value = "whorl", value_parser = parse_index)]
    index: IndexKind,
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The gallery folder (no server may be serving it).
    gallery: PathBuf,
    /// HNSW neighbours per node of the graphs written.
    #[arg(long, default_value_t = 32)]
    m: usize,
    /// HNSW ef at construction.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
}

pub fn parse_vectors(s: &str) -> Result<VectorKind, String> {
    VectorKind::parse(s).ok_or_else(|| format!("'{s}' is not one of f32, f16, int8"))
}

pub fn parse_index(s: &str) -> Result<IndexKind, String> {
    IndexKind::parse(s).ok_or_else(|| format!("'{s}' is not one of whorl, hnsw_rs"))
}

fn subject_of(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match stem.rsplit_once('_') {
        Some((s, imp)) if imp.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() => s.to_string(),
        _ => stem,
    }
}

fn files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Every (subject, labels, template) of the inputs, lazily.
fn items(inputs: &[PathBuf]) -> Result<Box<dyn Iterator<Item = gallery::BuildItem>>> {
    let files = files(inputs)?;
    let iter = files.into_iter().flat_map(|f| -> Box<dyn Iterator<Item = gallery::BuildItem>> {
        if f.extension().is_some_and(|e| e == "wsyn") {
            let reader = std::fs::File::open(&f)
                .ok()
                .and_then(|file| whorl::synth::pack::PackReader::new(std::io::BufReader::new(file)).ok());
            return match reader {
                Some(r) => Box::new(r.filter_map(move |x| match x {
                    Ok(p) => Some((format!("S{:09}", p.finger), Vec::new(), p.template)),
                    Err(e) => {
                        tracing::error!("{}: {e}", f.display());
                        None
                    }
                })),
                None => {
                    tracing::error!("{}: not a readable pack", f.display());
                    Box::new(std::iter::empty())
                }
            };
        }
        let subject = subject_of(&f);
        let parsed =
            std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| template::parse(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(ts) => Box::new(ts.into_iter().map(move |t| (subject.clone(), Vec::new(), t))),
            Err(e) => {
                tracing::error!("{}: skipped: {e}", f.display());
                Box::new(std::iter::empty())
            }
        }
    });
    Ok(Box::new(iter))
}

pub fn build(a: BuildArgs) -> Result<()> {
    let embedder = Embedder::default();
    let matcher = Matcher::default();
    let opts = BuildOptions {
        shard_size: a.shard_size,
        vectors: if a.f16 { VectorKind::F16 } else { a.vectors },
        index_kind: a.index,
        index: IndexParams { max_connections: a.m, ef_construction: a.ef_construction },
        ..BuildOptions::default()
    };
    let (items, total): (Box<dyn Iterator<Item = gallery::BuildItem>>, u64) = match a.synth {
        Some(n) => {
            let pop = Subjects::new(Synth::new(SynthParams::default(), a.seed), a.fingers_per_subject);
            let f = u64::from(a.fingers_per_subject);
            let it = (0..n).map(move |i| {
                let s = i / f;
                let id = pop.finger_ids(s)[(i % f) as usize];
                (Subjects::id(s), Vec::new(), pop.synth.template(id, 0))
            });
            (Box::new(it), n)
        }
        None if a.input.is_empty() => bail!("give --input FILE|DIR... or --synth N"),
        None => (items(&a.input)?, 0),
    };
    let len = (total > 0).then_some(total);
    let mut progress = Progress::new("writing", len, "templates");
    let t0 = Instant::now();
    let report = gallery::build_with(&a.out, &embedder, &matcher, &opts, items, |p| match p {
        gallery::BuildProgress::Writing { templates } => {
            progress.set_phase("writing", len, "templates");
            progress.set_position(templates);
        }
        gallery::BuildProgress::Graphs { shard, done, total } => {
            progress.set_phase(&format!("{shard}: HNSW graphs"), Some(total as u64), "nodes");
            progress.set_position(done as u64);
        }
        gallery::BuildProgress::HnswRs { shard } => progress.set_phase(&format!("{shard}: hnsw_rs index"), None, ""),
    })?;
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    outln!(
        "built {} with {} templates in {} shard(s), {:.1} MiB, in {secs:.1} s: shards {:.1} s ({:.0} templates/s), indexes {:.1} s; peak RSS {:.0} MiB",
        a.out.display(),
        report.templates,
        report.shards,
        report.shard_bytes as f64 / 1048576.0,
        report.write_seconds,
        report.templates as f64 / report.write_seconds.max(1e-9),
        report.index_seconds,
        super::hnsw_bench::peak_rss_mib()
    )?;
    Ok(())
}

pub fn info(a: GalleryArgs) -> Result<()> {
    let m = Manifest::load(&a.gallery)?;
    outln!(
        "gallery {} (generation {}, embedding {}, log folded up to {})",
        a.gallery.display(),
        m.generation,
        m.embedding,
        m.applied_seq
    )?;
    outln!("| shard | templates | subjects | MiB | status |")?;
    outln!("|---|---|---|---|---|")?;
    for s in &m.shards {
        let status = match Shard::open(&a.gallery.join(&s.file)) {
            Ok(sh) if sh.header().table_crc == s.table_crc => "ok (header)".to_string(),
            Ok(_) => "file differs from the manifest".to_string(),
            Err(e) => e.to_string(),
        };
        outln!("| {} | {} | {} | {:.1} | {status} |", s.name, s.templates, s.subjects, s.bytes as f64 / 1048576.0)?;
    }
    let log = a.gallery.join(gallery::wal::FILE);
    if let Ok(meta) = std::fs::metadata(&log) {
        outln!("write-ahead log: {} bytes", meta.len())?;
    }
    if let Some(s) = m.shards.first().and_then(|s| Shard::open(&a.gallery.join(&s.file)).ok()) {
        outln!("\nbytes per template by section ({}):", s.path().display())?;
        outln!("| section | bytes | per template |")?;
        outln!("|---|---|---|")?;
        for (k, _, len, _) in s.sections() {
            outln!("| {} | {len} | {:.1} |", k.name(), len as f64 / s.len().max(1) as f64)?;
        }
    }
    Ok(())
}

pub fn verify(a: GalleryArgs) -> Result<()> {
    let checks = gallery::verify(&a.gallery)?;
    let mut bad = 0;
    for c in &checks {
        match &c.problem {
            None => outln!("{}: ok ({})", c.what, c.detail)?,
            Some(p) => {
                bad += 1;
                outln!("{}: FAILED: {p}", c.what)?;
            }
        }
    }
    if bad > 0 {
        bail!("{bad} problem(s) in {}", a.gallery.display());
    }
    Ok(())
}

pub fn migrate(a: MigrateArgs) -> Result<()> {
    let t = Instant::now();
    let params = IndexParams { max_connections: a.m, ef_construction: a.ef_construction };
    let r = gallery::migrate(&a.gallery, &params)?;
    for (old, new) in &r.rewritten {
        println!("{old} -> {new}");
    }
    println!(
        "migrated {}: {} shard(s) rewritten with graphs, {} already current, in {:.1} s",
        a.gallery.display(),
        r.rewritten.len(),
        r.current,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn compact(a: GalleryArgs) -> Result<()> {
    let opening = Progress::spinner(&format!("opening {}", a.gallery.display()));
    let opts = GalleryOptions { index_kind: a.index, ..GalleryOptions::default() };
    let g = Gallery::open(&a.gallery, Embedder::default(), Matcher::default(), opts)?;
    drop(opening);
    let t = Instant::now();
    let compacting = Progress::spinner("compacting");
    let r = g.compact()?;
    drop(compacting);
    outln!(
        "compacted {} in {:.1} s: {} shard(s) rewritten without {} deleted templates, {} new shard(s) with {} enrolled templates; log folded up to {}",
        a.gallery.display(),
        t.elapsed().as_secs_f64(),
        r.rewritten.len(),
        r.removed_templates,
        r.added.len(),
        r.folded_templates,
        r.applied_seq
    )?;
    Ok(())
}

/// Times opening a gallery four ways: mapping the shards (header and
/// section table checked), then the whole gallery with its HNSW graphs
/// (`--index`: whorl's, searched in place, or hnsw_rs's files) without a
/// CRC pass and with the check a server runs, then the full CRC pass of
/// every shard (`whorl verify`'s); and prints what the candidate stage
/// keeps resident per template.
pub fn open_time(a: GalleryArgs) -> Result<()> {
    let m = Manifest::load(&a.gallery)?;
    let templates: u64 = m.shards.iter().map(|s| s.templates).sum();
    println!(
        "opening {} ({} shard(s), {templates} templates, index {}; page cache as it is)",
        a.gallery.display(),
        m.shards.len(),
        a.index
    );
    println!("| what | ms |\n|---|---|");
    let t = Instant::now();
    let shards = m.shards.iter().map(|s| Shard::open(&a.gallery.join(&s.file))).collect::<Result<Vec<_>, _>>()?;
    println!(
        "| shard mapping alone (mmap, header, section table, graph layout) | {:.2} |",
        t.elapsed().as_secs_f64() * 1e3
    );
    let resident: u64 = shards
        .iter()
        .map(|s| {
            let l = s.vectors_layout();
            let graphs: usize = s
                .graphs()
                .iter()
                .map(|g| g.rows.len() + g.levels.len() + g.level0.len() + g.upper_index.len() + g.upper.len())
                .sum();
            (l.values.len() + l.scales.len() + graphs) as u64
        })
        .sum();
    drop(shards);
    for (verify, what) in [
        (false, "gallery with its graphs, no CRC pass"),
        (
            true,
            "gallery with its graphs, checked for serving (the default: format 3 leaves cylinders and minutiae to their first read)",
        ),
    ] {
        let opts = GalleryOptions {
            verify_on_open: verify,
            build_missing_indexes: false,
            index_kind: a.index,
            ..GalleryOptions::default()
        };
        let t = Instant::now();
        let g = Gallery::open(&a.gallery, Embedder::default(), Matcher::default(), opts)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if !g.problems().is_empty() {
            bail!("shards left out: {:?}", g.problems());
        }
        outln!("| {what} | {ms:.1} |")?;
    }
    let t = Instant::now();
    for s in &m.shards {
        Shard::open(&a.gallery.join(&s.file))?.verify()?;
    }
    outln!(
        "| every shard's full CRC pass over every byte (`whorl verify`) | {:.1} |",
        t.elapsed().as_secs_f64() * 1e3
    )?;
    if a.index == IndexKind::Whorl {
        println!(
            "\ncandidate stage, resident per template (vectors, scales and graphs as stored): {:.0} bytes ({} bytes in all)",
            resident as f64 / templates.max(1) as f64,
            resident
        );
    }
    Ok(())
}

/// A subject's templates for the enrol stress tool.
pub fn synthetic_subject(seed: u64, id: u64, fingers: u32) -> Vec<Template> {
    let s = Synth::new(SynthParams::default(), seed);
    (0..fingers).map(|k| s.template(id * 10 + u64::from(k), 0)).collect()
}

#[derive(Args)]
pub struct StressArgs {
    /// The gallery folder (created empty if absent).
    #[arg(long)]
    gallery: PathBuf,
    /// First subject number.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Subjects to enrol.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Fingers per subject.
    #[arg(long, default_value_t = 3)]
    fingers: u32,
    /// Use group commit.
    #[arg(long)]
    group: bool,
    /// Enrolling threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Enrols synthetic subjects one after another, printing `acked ID` to
/// stdout (flushed) only once each enrolment is durable: the crash test
/// kills this process and checks the acknowledgements against the gallery.
pub fn enroll_stress(a: StressArgs) -> Result<()> {
    use std::io::Write;
    let (embedder, matcher) = (Embedder::default(), Matcher::default());
    if !a.gallery.join(gallery::manifest::FILE).exists() {
        Gallery::create(&a.gallery, &embedder, &matcher)?;
    }
    let opts = GalleryOptions {
        sync: if a.group { gallery::SyncMode::Group } else { gallery::SyncMode::PerRecord },
        ..GalleryOptions::default()
    };
    let g = Gallery::open(&a.gallery, embedder, matcher, opts)?;
    let t0 = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(a.start);
    let end = a.start + a.count;
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..a.threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let id = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if id >= end {
                            return Ok(());
                        }
                        let subject = format!("P{id:08}");
                        g.enroll(
                            &subject,
                            vec![("batch".into(), "stress".into())],
                            synthetic_subject(77, id, a.fingers),
                        )?;
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "acked {subject}")?;
                        out.flush()?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("enrolling thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("enrolled {} subjects in {secs:.2} s: {:.1} enrolments/s", a.count, a.count as f64 / secs);
    Ok(())
}
