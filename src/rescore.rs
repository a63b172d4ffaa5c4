//! Re-scoring candidates with the cylinder matcher: one trait, a CPU
//! backend here, a GPU backend in [`crate::gpu`], and [`AutoRescorer`],
//! which prefers the GPU and falls back to the CPU (logged) when the GPU is
//! missing, lost, out of memory or hung (a batch past its poll timeout).
//! Both backends return the matcher's integer [`ScoreParts`], so their
//! scores are identical. [`Rescorer::rescore_until`] stops between
//! candidates (CPU) or batches (GPU) when the request's [`Cancel`] says so.

use crate::cancel::{Cancel, Stop};
use crate::mcc::{Matcher, PreparedRef, ScoreParts, Scratch};
use rayon::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a candidate's prepared blob lives in a shard (the GPU keeps shards
/// resident and looks candidates up by this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The shard's key (its table CRC and generation-independent name hash).
    pub shard: u64,
    /// Template index in the shard.
    pub template: u32,
}

/// One candidate to score.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its prepared cylinders.
    pub prepared: PreparedRef<'a>,
    /// Where it lives, when it is in a shard.
    pub location: Option<Location>,
}

/// A probe and its candidates.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The probe's prepared cylinders.
    pub probe: PreparedRef<'a>,
    /// The candidates.
    pub candidates: Vec<Candidate<'a>>,
}

/// Which backend scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The CPU matcher (kernel name).
    Cpu(String),
    /// A GPU (adapter name and API).
    Gpu(String),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cpu(k) => write!(f, "cpu ({k})"),
            Backend::Gpu(a) => write!(f, "gpu ({a})"),
        }
    }
}

/// Errors of a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RescoreError {
    /// No usable GPU adapter.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The GPU device was lost.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// GPU memory ran out.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// A GPU batch did not finish within the poll timeout (a hung device).
    #[error("GPU batch not done after {0:?}: the device is taken out of service")]
    Timeout(std::time::Duration),
    /// Any other GPU failure.
    #[error("GPU: {0}")]
    Gpu(String),
    /// The request's deadline passed or its caller went away.
    #[error("re-scoring stopped: {0}")]
    Stopped(Stop),
}

/// Scores queries; implementations must give [`Matcher::score_parts`]'s
/// integers exactly.
pub trait Rescorer: Send + Sync {
    /// The backend doing the work.
    fn backend(&self) -> Backend;
    /// Scores every candidate of every query, in order.
    fn rescore(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoreParts>>, RescoreError>;
    /// [`Rescorer::rescore`], stopping with [`RescoreError::Stopped`] when
    /// `cancel` says so (backends check between pieces of work; this
    /// default only before starting).
    fn rescore_until(&self, queries: &[Query<'_>], cancel: &Cancel) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        cancel.check().map_err(RescoreError::Stopped)?;
        self.rescore(queries)
    }
}

impl<T: Rescorer + ?Sized> Rescorer for std::sync::Arc<T> {
    fn backend(&self) -> Backend {
        (**self).backend()
    }

    fn rescore(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        (**self).rescore(queries)
    }

    fn rescore_until(&self, queries: &[Query<'_>], cancel: &Cancel) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        (**self).rescore_until(queries, cancel)
    }
}

/// The CPU backend: the matcher, in parallel over all (query, candidate) pairs.
#[derive(Debug, Clone, Default)]
pub struct CpuRescorer {
    matcher: Matcher,
}

impl CpuRescorer {
    /// A CPU backend for `matcher`.
    pub fn new(matcher: Matcher) -> CpuRescorer {
        CpuRescorer { matcher }
    }
}

impl Rescorer for CpuRescorer {
    fn backend(&self) -> Backend {
        Backend::Cpu(format!("{:?}", self.matcher.kernel()).to_lowercase())
    }

    fn rescore(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        self.rescore_until(queries, &Cancel::default())
    }

    fn rescore_until(&self, queries: &[Query<'_>], cancel: &Cancel) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        // One check per comparison: tens of ns against microseconds of work.
        queries
            .iter()
            .map(|q| {
                q.candidates
                    .par_iter()
                    .map_init(Scratch::new, |s, c| {
                        cancel.check().map_err(RescoreError::Stopped)?;
                        Ok(self.matcher.score_parts(q.probe, c.prepared, s))
                    })
                    .collect::<Result<Vec<ScoreParts>, RescoreError>>()
            })
            .collect()
    }
}

/// Which backend to use (`WHORL_BACKEND=cpu|gpu|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// CPU only.
    Cpu,
    /// GPU required: an error if none can be used.
    Gpu,
    /// GPU when available, else CPU.
    #[default]
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendChoice, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(BackendChoice::Cpu),
            "gpu" => Ok(BackendChoice::Gpu),
            "auto" | "" => Ok(BackendChoice::Auto),
            o => Err(format!("backend '{o}' is not cpu, gpu or auto")),
        }
    }
}

impl BackendChoice {
    /// From `WHORL_BACKEND`, defaulting to `auto`.
    pub fn from_env() -> Result<BackendChoice, String> {
        std::env::var("WHORL_BACKEND").map(|v| v.parse()).unwrap_or(Ok(BackendChoice::Auto))
    }
}

/// Why [`AutoRescorer`] re-scored a batch on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The GPU batch passed its poll timeout (the GPU is dropped from then on).
    Timeout,
    /// The device was lost or is missing (dropped from then on).
    Lost,
    /// Any other GPU error (this batch only).
    Error,
}

impl Fallback {
    /// A short name (a metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Timeout => "timeout",
            Fallback::Lost => "lost",
            Fallback::Error => "error",
        }
    }
}

/// Called on every fall-back (the server counts them in its metrics).
pub type FallbackHook = Arc<dyn Fn(Fallback) + Send + Sync>;

/// The GPU when it works, the CPU otherwise: a GPU failure is logged and
/// the batch (and, after a lost or hung device, every later one) is scored
/// on the CPU, so callers never see a crash, a hang or a wrong score.
pub struct AutoRescorer {
    gpu: Option<Box<dyn Rescorer>>,
    cpu: CpuRescorer,
    gpu_down: AtomicBool,
    on_fallback: Option<FallbackHook>,
}

impl AutoRescorer {
    /// Combines an optional GPU backend with the CPU one.
    pub fn new(gpu: Option<Box<dyn Rescorer>>, cpu: CpuRescorer) -> AutoRescorer {
        AutoRescorer { gpu, cpu, gpu_down: AtomicBool::new(false), on_fallback: None }
    }

    /// Calls `hook` on every fall-back to the CPU.
    pub fn with_fallback_hook(mut self, hook: FallbackHook) -> AutoRescorer {
        self.on_fallback = Some(hook);
        self
    }

    /// Whether the GPU is (still) in use.
    pub fn gpu_active(&self) -> bool {
        self.gpu.is_some() && !self.gpu_down.load(Ordering::Relaxed)
    }
}

impl Rescorer for AutoRescorer {
    fn backend(&self) -> Backend {
        match &self.gpu {
            Some(g) if self.gpu_active() => g.backend(),
            _ => self.cpu.backend(),
        }
    }

    fn rescore(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        self.rescore_until(queries, &Cancel::default())
    }

    fn rescore_until(&self, queries: &[Query<'_>], cancel: &Cancel) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        if let Some(g) = self.gpu.as_ref().filter(|_| self.gpu_active()) {
            match g.rescore_until(queries, cancel) {
                Ok(r) => return Ok(r),
                Err(e @ RescoreError::Stopped(_)) => return Err(e),
                Err(e) => {
                    let why = match e {
                        RescoreError::Timeout(_) => Fallback::Timeout,
                        RescoreError::DeviceLost(_) | RescoreError::NoAdapter(_) => Fallback::Lost,
                        _ => Fallback::Error,
                    };
                    let permanent = why != Fallback::Error;
                    if permanent {
                        self.gpu_down.store(true, Ordering::Relaxed);
                    }
                    if let Some(hook) = &self.on_fallback {
                        hook(why);
                    }
                    tracing::error!(
                        "GPU re-scoring failed ({e}); this batch{} runs on the CPU",
                        if permanent { " and all later ones" } else { "" }
                    );
                }
            }
        }
        self.cpu.rescore_until(queries, cancel)
    }
}
