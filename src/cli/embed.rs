//! `whorl embed-train`: learns the embedding model from synthetic templates.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use whorl::embed::{EmbedModel, Embedder, Method, pairs::PairBins, train};
use whorl::synth::{Synth, SynthParams};

#[derive(Args)]
pub struct TrainArgs {
    /// Synthetic fingers to learn from (one impression each).
    #[arg(long, default_value_t = 8000)]
    fingers: u64,
    /// Seed of the training population (kept apart from evaluation seeds).
    #[arg(long, default_value_t = 999_331)]
    seed: u64,
    /// Distance, α and β bins of the pair histogram.
    #[arg(long, value_delimiter = ',', default_value = "8,12,12")]
    bins: Vec<usize>,
    /// Largest pair distance (500-dpi pixels).
    #[arg(long, default_value_t = 160.0)]
    d_max: f32,
    /// Output dimension.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Eigenvalue floor, as a share of the largest.
    #[arg(long, default_value_t = 0.002)]
    eps: f64,
    /// Version recorded with the vectors this model makes.
    #[arg(long, default_value_t = 1)]
    version: u32,
    /// Output model file.
    #[arg(long, default_value = "assets/embed-mph-v1.bin")]
    out: PathBuf,
}

/// The embedder named on the command line.
pub fn embedder(method: &str, model: Option<&Path>) -> Result<Embedder> {
    match (method, model) {
        ("mph-raw", _) => Ok(Embedder::pair_histogram()),
        ("mph-w", Some(p)) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Embedder::with_method(Method::Whitened(Arc::new(EmbedModel::from_bytes(&bytes)?))))
        }
        ("mph-w", None) => Ok(Embedder::with_method(Method::Whitened(whorl::embed::builtin_model()?))),
        (m, _) => bail!("unknown embedding method '{m}' (mph-w or mph-raw)"),
    }
}

pub fn train(a: TrainArgs) -> Result<()> {
    let [d, al, b] = a.bins[..] else { bail!("--bins takes three numbers: distance, alpha, beta") };
    let bins = PairBins { d_bins: d, a_bins: al, b_bins: b, d_max: a.d_max };
    let synth = Synth::new(SynthParams::default(), a.seed);
    let templates: Vec<_> = synth.batch(0..a.fingers, 0..1).into_iter().map(|r| r.template).collect();
    let t0 = std::time::Instant::now();
    let model = train::train_model(&templates, bins, a.dim, a.eps, a.version);
    std::fs::write(&a.out, model.to_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} ({} -> {} dims, {:.0} s) from {} synthetic templates (seed {})",
        a.out.display(),
        bins.dim(),
        model.whitening.dout,
        t0.elapsed().as_secs_f64(),
        a.fingers,
        a.seed
    );
    Ok(())
}
