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
    #[arg(long, default_value_t = 2)]
    version: u32,
    /// Whitening: `learned` (by the covariance of mated differences, from
    /// several impressions per finger) or `pca` (unsupervised, one impression).
    #[arg(long, default_value = "learned")]
    whitening: String,
    /// Impressions per finger for `learned` whitening.
    #[arg(long, default_value_t = 2)]
    impressions: u32,
    /// Output model file.
    #[arg(long, default_value = "assets/embed-mph-v2.bin")]
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
    let t0 = std::time::Instant::now();
    let model = match a.whitening.as_str() {
        "pca" => {
            let templates: Vec<_> = synth.batch(0..a.fingers, 0..1).into_iter().map(|r| r.template).collect();
            train::train_model(&templates, bins, a.dim, a.eps, a.version)
        }
        "learned" => {
            if a.impressions < 2 {
                bail!("learned whitening needs --impressions 2 or more");
            }
            let templates: Vec<_> =
                synth.batch(0..a.fingers, 0..a.impressions).into_iter().map(|r| (r.finger, r.template)).collect();
            train::train_model_supervised(&templates, bins, a.dim, a.eps, a.version)
        }
        w => bail!("--whitening {w}: learned or pca"),
    };
    std::fs::write(&a.out, model.to_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "wrote {} ({} -> {} dims, {} whitening, {:.0} s) from {} synthetic fingers (seed {}); no real template",
        a.out.display(),
        bins.dim(),
        model.whitening.dout,
        a.whitening,
        t0.elapsed().as_secs_f64(),
        a.fingers,
        a.seed
    );
    Ok(())
}
