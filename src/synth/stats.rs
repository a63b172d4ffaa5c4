//! Statistics of a template population, to put synthetic templates side by
//! side with real ones (`whorl synth stats`).

use crate::template::{MinutiaKind, Template};
use std::f32::consts::{PI, TAU};
use std::fmt::Write;

/// Summary statistics of a set of templates. Distances are in 500-dpi pixels.
#[derive(Debug, Clone, Default)]
pub struct TemplateStats {
    /// Number of templates.
    pub templates: usize,
    /// Minutiae per template.
    pub counts: Vec<f32>,
    /// Distance from each minutia to its nearest neighbour.
    pub nn_distance: Vec<f32>,
    /// Angle between each minutia's direction and its nearest neighbour's, degrees.
    pub nn_angle: Vec<f32>,
    /// Share of minutiae per 45° direction bin, counter-clockwise from +x.
    pub angle_hist: [f32; 8],
    /// Share of endings among minutiae.
    pub ending_share: f32,
    /// Bounding-box width and height of each template's minutiae.
    pub bbox_w: Vec<f32>,
    /// Bounding-box heights.
    pub bbox_h: Vec<f32>,
}

impl TemplateStats {
    /// Gathers statistics over `templates`.
    pub fn of<'a>(templates: impl IntoIterator<Item = &'a Template>) -> TemplateStats {
        let mut s = TemplateStats::default();
        let (mut endings, mut total) = (0usize, 0usize);
        let mut hist = [0usize; 8];
        for t in templates {
            s.templates += 1;
            s.counts.push(t.minutiae.len() as f32);
            let k = t.scale_to_500dpi();
            for (i, m) in t.minutiae.iter().enumerate() {
                total += 1;
                endings += usize::from(m.kind == MinutiaKind::Ending);
                hist[((m.angle / TAU * 8.0) as usize).min(7)] += 1;
                let nearest = t
                    .minutiae
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, o)| (((o.x - m.x).powi(2) + (o.y - m.y).powi(2)).sqrt(), o.angle))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((d, a)) = nearest {
                    s.nn_distance.push(d * k);
                    let diff = (m.angle - a).rem_euclid(TAU);
                    s.nn_angle.push(diff.min(TAU - diff) * 180.0 / PI);
                }
            }
            if let (Some(w), Some(h)) = (extent(t, |m| m.x), extent(t, |m| m.y)) {
                s.bbox_w.push(w * k);
                s.bbox_h.push(h * k);
            }
        }
        let total_f = total.max(1) as f32;
        s.ending_share = endings as f32 / total_f;
        for (o, h) in s.angle_hist.iter_mut().zip(hist) {
            *o = h as f32 / total_f;
        }
        s
    }
}

fn extent(t: &Template, f: impl Fn(&crate::template::Minutia) -> f32) -> Option<f32> {
    let lo = t.minutiae.iter().map(&f).min_by(f32::total_cmp)?;
    let hi = t.minutiae.iter().map(&f).max_by(f32::total_cmp)?;
    Some(hi - lo)
}

/// The `q`-quantile (0..=1) of `v` by linear interpolation; 0 when empty.
pub fn quantile(v: &[f32], q: f32) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f32;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    let next = s.get(i + 1).copied().unwrap_or(s[i]);
    s[i] + (next - s[i]) * frac
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f32>() / v.len() as f32 }
}

fn fmt_q(v: &[f32]) -> String {
    let q: Vec<String> = [0.05, 0.25, 0.5, 0.75, 0.95].iter().map(|&p| format!("{:.0}", quantile(v, p))).collect();
    format!("{:.1} ({})", mean(v), q.join("/"))
}

/// A markdown table comparing populations column by column.
pub fn comparison_table(columns: &[(&str, &TemplateStats)]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let _ = writeln!(out, "| statistic (mean (q5/q25/q50/q75/q95)) | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    let mut row = |name: &str, f: &dyn Fn(&TemplateStats) -> String| {
        let cells: Vec<String> = columns.iter().map(|c| f(c.1)).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row("templates", &|s| s.templates.to_string());
    row("minutiae per template", &|s| fmt_q(&s.counts));
    row("nearest-neighbour distance (px @500dpi)", &|s| fmt_q(&s.nn_distance));
    row("nearest-neighbour direction difference (deg)", &|s| fmt_q(&s.nn_angle));
    row("neighbours pointing apart (>90 deg)", &|s| {
        let n = s.nn_angle.iter().filter(|&&a| a > 90.0).count();
        format!("{:.1}%", 100.0 * n as f32 / s.nn_angle.len().max(1) as f32)
    });
    row("bounding-box width (px)", &|s| fmt_q(&s.bbox_w));
    row("bounding-box height (px)", &|s| fmt_q(&s.bbox_h));
    row("ridge endings", &|s| format!("{:.1}%", 100.0 * s.ending_share));
    row("direction histogram, 45-deg bins from +x ccw (%)", &|s| {
        let v: Vec<String> = s.angle_hist.iter().map(|h| format!("{:.0}", 100.0 * h)).collect();
        v.join(" ")
    });
    out
}
