//! Typed reads of one template's or subject's records in an open shard:
//! prepared cylinders, finger position, subject id and labels, minutiae.
//! Every read is bounds-checked, and in format 3 a template's cylinders
//! and minutiae are checked against their CRC32C when first read
//! (`checks.rs`); damage is an error naming the section and offset.

use super::ShardError;
use super::checks::Part;
use super::format::*;
use super::reader::Shard;
use crate::mcc::PreparedRef;
use crate::template::{FingerPosition, ImpressionType, Minutia, MinutiaKind, Template};

impl Shard {
    /// The prepared cylinders of template `t`, read in place.
    pub fn prepared(&self, t: usize) -> Result<PreparedRef<'_>, ShardError> {
        let o = self.u64s(SectionKind::PreparedOffsets);
        let words: &[u64] = bytemuck::try_cast_slice(self.section(SectionKind::Prepared)).unwrap_or(&[]);
        let (a, b) = (o[t] as usize, o[t + 1] as usize);
        self.check_template(Part::Prepared, t, bytemuck::cast_slice(&words[a..b]), 8 * a)?;
        PreparedRef::new(&words[a..b]).map_err(|e| {
            self.corrupt(
                SectionKind::Prepared,
                self.range(SectionKind::Prepared).start + 8 * a,
                format!("template {t}: {e}"),
            )
        })
    }

    /// Finger position of template `t`.
    pub fn finger(&self, t: usize) -> FingerPosition {
        FingerPosition(self.section(SectionKind::FingerPosition)[t])
    }

    /// Index of the subject of template `t`.
    pub fn subject_index(&self, t: usize) -> usize {
        self.u32s(SectionKind::TemplateSubject)[t] as usize
    }

    fn string(&self, offset: u32, len: u32) -> Result<&str, ShardError> {
        let heap = self.section(SectionKind::Strings);
        let r = offset as usize..(offset as usize).saturating_add(len as usize);
        heap.get(r.clone()).and_then(|b| std::str::from_utf8(b).ok()).ok_or_else(|| {
            self.corrupt(
                SectionKind::Strings,
                self.range(SectionKind::Strings).start + r.start,
                "string out of range or not UTF-8".into(),
            )
        })
    }

    fn subject_record(&self, s: usize) -> Result<SubjectRecord, ShardError> {
        let b = self.section(SectionKind::Subjects);
        b.get(16 * s..16 * s + 16).map(bytemuck::pod_read_unaligned).ok_or_else(|| {
            self.corrupt(SectionKind::Subjects, self.range(SectionKind::Subjects).start, format!("no subject {s}"))
        })
    }

    /// The id of subject `s`.
    pub fn subject_id(&self, s: usize) -> Result<&str, ShardError> {
        let r = self.subject_record(s)?;
        self.string(r.id_offset, r.id_len)
    }

    /// The labels of subject `s`.
    pub fn subject_labels(&self, s: usize) -> Result<Vec<(&str, &str)>, ShardError> {
        let r = self.subject_record(s)?;
        let table = self.section(SectionKind::Labels);
        (r.labels_start as usize..(r.labels_start as usize).saturating_add(r.labels_count as usize))
            .map(|i| {
                let l: LabelRecord =
                    table.get(16 * i..16 * i + 16).map(bytemuck::pod_read_unaligned).ok_or_else(|| {
                        self.corrupt(
                            SectionKind::Labels,
                            self.range(SectionKind::Labels).start,
                            format!("no label {i}"),
                        )
                    })?;
                Ok((self.string(l.key_offset, l.key_len)?, self.string(l.value_offset, l.value_len)?))
            })
            .collect()
    }

    /// The stored template `t` (its minutiae exactly as enrolled).
    pub fn template(&self, t: usize) -> Result<Template, ShardError> {
        let o = self.u64s(SectionKind::MinutiaeOffsets);
        let data = self.section(SectionKind::Minutiae);
        let start = self.range(SectionKind::Minutiae).start;
        let (a, b) = (o[t] as usize, o[t + 1] as usize);
        let rec = &data[a..b];
        self.check_template(Part::Minutiae, t, rec, a)?;
        let bad = |p: String| self.corrupt(SectionKind::Minutiae, start + a, format!("template {t}: {p}"));
        if rec.len() < 16 {
            return Err(bad("record shorter than its header".into()));
        }
        let h: MinutiaeHeader = bytemuck::pod_read_unaligned(&rec[..16]);
        if rec.len() != 16 + 16 * h.count as usize {
            return Err(bad(format!("{} bytes for {} minutiae", rec.len(), h.count)));
        }
        let minutiae = rec[16..]
            .chunks_exact(16)
            .map(|c| {
                let p: PackedMinutia = bytemuck::pod_read_unaligned(c);
                Minutia { x: p.x, y: p.y, angle: p.angle, kind: MinutiaKind::from_code(p.kind), quality: p.quality }
            })
            .collect();
        Ok(Template {
            finger_position: FingerPosition(h.finger),
            impression_type: ImpressionType(h.impression),
            view_number: h.view,
            resolution_x: h.resolution_x,
            resolution_y: h.resolution_y,
            width: h.width,
            height: h.height,
            quality: h.quality,
            minutiae,
        })
    }
}
