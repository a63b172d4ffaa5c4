//! Per-template checks (format 3): the two sections read one template at
//! a time (cylinders and minutiae, 94% of a shard's bytes) carry a CRC32C
//! per template in the template-checks section, so that opening a shard
//! checks in full only what every search walks in bulk (graphs,
//! embeddings, the small tables: about 5% of the file), and each
//! template's cylinders and minutiae are checked the first time they are
//! read. A 1,000,000-finger shard then opens without reading its 15 GB,
//! and no damaged byte is ever scored: the first mismatch refuses the
//! template and, from then on, the whole shard ([`Shard::damage`]).
//!
//! A bit per template and section remembers what has been checked (one
//! relaxed atomic load on every later read); [`Shard::verify`], the full
//! pass, checks every section's CRC32C as before and then sets every bit.

use super::ShardError;
use super::format::SectionKind;
use super::reader::Shard;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Which per-template record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The template's cylinder words.
    Prepared = 0,
    /// The template's minutiae record.
    Minutiae = 1,
}

impl Part {
    fn section(self) -> SectionKind {
        match self {
            Part::Prepared => SectionKind::Prepared,
            Part::Minutiae => SectionKind::Minutiae,
        }
    }
}

/// What has been checked, and the damage found (format 3).
pub(super) struct TemplateChecks {
    checked: [Box<[AtomicU64]>; 2],
    damage: OnceLock<ShardError>,
}

impl std::fmt::Debug for TemplateChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateChecks").field("templates", &(self.checked[0].len() * 64)).finish_non_exhaustive()
    }
}

impl TemplateChecks {
    /// Nothing checked yet, for `templates` templates.
    pub(super) fn new(templates: usize) -> TemplateChecks {
        let words = templates.div_ceil(64);
        let bits = || (0..words).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        TemplateChecks { checked: [bits(), bits()], damage: OnceLock::new() }
    }

    fn is_checked(&self, part: Part, t: usize) -> bool {
        self.checked[part as usize][t / 64].load(Ordering::Relaxed) & (1 << (t % 64)) != 0
    }

    /// Every template of both sections counts as checked (after the full pass).
    pub(super) fn mark_all(&self) {
        for w in self.checked.iter().flat_map(|b| b.iter()) {
            w.store(u64::MAX, Ordering::Relaxed);
        }
    }

    fn mark(&self, part: Part, t: usize) {
        self.checked[part as usize][t / 64].fetch_or(1 << (t % 64), Ordering::Relaxed);
    }
}

impl Shard {
    /// The damage a per-template check found, if any: a shard with damage
    /// is refused from then on (every read of its cylinders or minutiae
    /// returns this error).
    pub fn damage(&self) -> Option<&ShardError> {
        self.checks.as_ref().and_then(|c| c.damage.get())
    }

    /// Whether the shard carries per-template checks (format 3).
    pub fn has_template_checks(&self) -> bool {
        self.checks.is_some()
    }

    /// The stored CRC32C of template `t`'s `part`.
    fn stored_check(&self, part: Part, t: usize) -> u32 {
        let b = self.section(SectionKind::TemplateChecks);
        let at = 8 * t + 4 * part as usize;
        b.get(at..at + 4).map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    }

    /// Checks `bytes`, template `t`'s `part` found at byte `offset` of its
    /// section, against its stored CRC32C the first time it is read.
    pub(super) fn check_template(&self, part: Part, t: usize, bytes: &[u8], offset: usize) -> Result<(), ShardError> {
        let Some(c) = &self.checks else { return Ok(()) };
        if let Some(e) = c.damage.get() {
            return Err(e.clone());
        }
        if c.is_checked(part, t) {
            return Ok(());
        }
        let (stored, got) = (self.stored_check(part, t), crate::checksum::crc32c(bytes));
        if stored != got {
            let kind = part.section();
            let e = self.corrupt(
                kind,
                self.range(kind).start + offset,
                format!(
                    "template {t}: CRC32C mismatch (stored {stored:08x}, computed {got:08x}); \
                     the shard is refused until it is replaced (`whorl verify` names every damaged section)"
                ),
            );
            tracing::error!("{e}");
            return Err(c.damage.get_or_init(|| e).clone());
        }
        c.mark(part, t);
        Ok(())
    }

    /// Checks every template's cylinders not checked yet, on all cores
    /// (the GPU uploads them all as they are).
    fn check_all_prepared(&self) -> Result<(), ShardError> {
        use rayon::prelude::*;
        if self.checks.is_none() {
            return Ok(());
        }
        let (data, o) = (self.section(SectionKind::Prepared), self.u64s(SectionKind::PreparedOffsets));
        (0..self.len()).into_par_iter().with_min_len(256).try_for_each(|t| {
            let (a, b) = (8 * o[t] as usize, 8 * o[t + 1] as usize);
            self.check_template(Part::Prepared, t, &data[a..b], a)
        })
    }

    /// Checks what opening a shard for serving must: for format 3, every
    /// section's CRC32C except the cylinders' and minutiae's, whose
    /// templates are checked as they are first read; for older formats,
    /// every section ([`Shard::verify`]).
    pub fn verify_open(&self) -> Result<(), ShardError> {
        if self.checks.is_none() {
            return self.verify();
        }
        self.verify_sections(|k| !Shard::RANDOM_ACCESS.contains(&k))
    }

    /// All prepared words and the per-template word offsets, every
    /// template's cylinders checked first (the GPU uploads them as they are).
    pub fn prepared_words(&self) -> Result<(&[u64], &[u64]), ShardError> {
        self.check_all_prepared()?;
        let words: &[u64] = bytemuck::try_cast_slice(self.section(SectionKind::Prepared)).unwrap_or(&[]);
        Ok((words, self.u64s(SectionKind::PreparedOffsets)))
    }
}
