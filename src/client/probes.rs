//! Synthetic probes with known answers, and probe folders.
//!
//! A synthetic gallery built by `whorl build --synth N` (or the demo)
//! holds impression 0 of subjects `S000000000..S{N-1}`; a probe is another
//! impression of an enrolled subject (mated, its mate known) or of a
//! subject never enrolled (numbers from N + 1,000,000 up).

use super::ClientError;
use crate::server::client;
use crate::server::loadgen::{BenchProbe, LIST};
use crate::synth::{Subjects, Synth, SynthParams};
use crate::template::{self, Format};
use std::collections::HashSet;
use std::path::Path;

/// Which synthetic probes to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthProbeSpec {
    /// Subjects in the synthetic gallery.
    pub subjects: u64,
    /// Fingers per subject the gallery was built with.
    pub fingers_per_subject: u32,
    /// Seed the gallery was built with.
    pub seed: u64,
    /// Mated probes: distinct enrolled subjects drawn at random (at most `subjects`).
    pub mated: usize,
    /// Non-mated probes (subjects never enrolled).
    pub non_mated: usize,
    /// Fingers per probe (the subject's first ones).
    pub probe_fingers: u32,
    /// Impression used as the probe (0 is the enrolled one).
    pub impression: u32,
}

impl SynthProbeSpec {
    /// Probes of the demo's one-finger gallery: `n` in all, half mated.
    pub fn for_demo(subjects: u64, seed: u64, n: usize) -> SynthProbeSpec {
        SynthProbeSpec {
            subjects,
            fingers_per_subject: 1,
            seed,
            mated: n / 2,
            non_mated: n - n / 2,
            probe_fingers: 1,
            impression: 1,
        }
    }
}

/// A synthetic probe: its name, one ISO record per finger, its mate.
#[derive(Debug, Clone)]
pub struct SynthProbe {
    /// `S000000123_1`: subject and impression.
    pub name: String,
    /// ISO/IEC 19794-2:2005 records, one per finger.
    pub records: Vec<Vec<u8>>,
    /// The enrolled subject it belongs to; `None`: never enrolled.
    pub mate: Option<String>,
}

impl From<SynthProbe> for BenchProbe {
    fn from(p: SynthProbe) -> BenchProbe {
        BenchProbe { name: p.name, probe: client::probe(p.records), mate: p.mate }
    }
}

/// The probes of `spec`: mated ones first (distinct subjects), then
/// non-mated ones. Deterministic for a given spec.
pub fn synth_probes(spec: &SynthProbeSpec) -> Result<Vec<SynthProbe>, ClientError> {
    let n = spec.subjects;
    if n == 0 {
        return Err(ClientError::Invalid("the synthetic gallery must hold at least one subject".into()));
    }
    let per = spec.fingers_per_subject.max(1);
    if spec.probe_fingers == 0 || spec.probe_fingers > per {
        return Err(ClientError::Invalid(format!("fingers per probe must be 1..={per}")));
    }
    if spec.mated as u64 > n {
        return Err(ClientError::Invalid(format!(
            "{} mated probes asked of a gallery of {n} subjects: at most one per subject",
            spec.mated
        )));
    }
    let pop = Subjects::new(Synth::new(SynthParams::default(), spec.seed), per);
    let mut rng = spec.seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let make = |s: u64, mate: Option<String>| -> Result<SynthProbe, ClientError> {
        let ts: Vec<_> = pop.templates(s, spec.impression).into_iter().take(spec.probe_fingers as usize).collect();
        let records = ts
            .iter()
            .map(|t| template::write(std::slice::from_ref(t), Format::Iso2005))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SynthProbe { name: format!("{}_{}", Subjects::id(s), spec.impression), records, mate })
    };
    let mut out = Vec::with_capacity(spec.mated + spec.non_mated);
    let mut drawn = HashSet::with_capacity(spec.mated);
    // Draws repeat (birthday problem): redraw until distinct, falling back
    // to a sweep when the gallery is nearly exhausted.
    let mut tries = 0u64;
    while drawn.len() < spec.mated {
        let s =
            if tries < 64 * spec.mated as u64 { next() % n } else { (0..n).find(|s| !drawn.contains(s)).unwrap_or(0) };
        tries += 1;
        if drawn.insert(s) {
            out.push(make(s, Some(Subjects::id(s)))?);
        }
    }
    for i in 0..spec.non_mated as u64 {
        out.push(make(n + 1_000_000 + i, None)?);
    }
    Ok(out)
}

/// What [`write_folder`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Probes listed in `probes.tsv`.
    pub probes: usize,
    /// Template files written.
    pub files: usize,
}

/// Writes each probe's records as ISO files and the list `probes.tsv`
/// (`file[,file...]<TAB>mate`), as `bench --probes DIR` reads them.
pub fn write_folder(dir: &Path, probes: &[SynthProbe]) -> Result<Written, ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| ClientError::io(dir, e))?;
    let mut tsv = String::from("# file(s)\tmate ('-': not enrolled)\n");
    let mut names = HashSet::new();
    for p in probes {
        let mut files = Vec::new();
        for (j, r) in p.records.iter().enumerate() {
            let f = if p.records.len() == 1 { format!("{}.iso", p.name) } else { format!("{}_f{j}.iso", p.name) };
            if !names.insert(f.clone()) {
                return Err(ClientError::Invalid(format!("two probes would both be written as {f}")));
            }
            let path = dir.join(&f);
            std::fs::write(&path, r).map_err(|e| ClientError::io(path, e))?;
            files.push(f);
        }
        tsv.push_str(&format!("{}\t{}\n", files.join(","), p.mate.as_deref().unwrap_or("-")));
    }
    let list = dir.join(LIST);
    std::fs::write(&list, tsv).map_err(|e| ClientError::io(list, e))?;
    Ok(Written { probes: probes.len(), files: names.len() })
}
