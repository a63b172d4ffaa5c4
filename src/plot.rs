//! PNG charts for reports (plotters with an embedded font, so no system
//! font libraries are needed).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// A chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    /// The output file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is embedded and known to be valid; a failure only means
        // text will be missing, which plotters then reports as an error.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One named series of points.
pub struct Series<'a> {
    /// Legend label.
    pub name: &'a str,
    /// The points.
    pub points: Vec<(f64, f64)>,
}

/// Axis scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Linear over the range.
    Linear(f64, f64),
    /// Logarithmic over the (positive) range.
    Log(f64, f64),
}

/// A line chart of `series` written to `path` (PNG, 900×600).
pub fn line_chart(
    path: &Path,
    title: &str,
    x: (&str, Scale),
    y: (&str, Scale),
    series: &[Series],
) -> Result<(), PlotError> {
    fonts();
    let err = |e: String| PlotError { path: path.display().to_string(), message: e };
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    match (x.1, y.1) {
        (Scale::Log(x0, x1), Scale::Log(y0, y1)) => {
            draw(&root, title, x.0, y.0, (x0..x1).log_scale(), (y0..y1).log_scale(), series).map_err(err)?
        }
        (Scale::Linear(x0, x1), Scale::Log(y0, y1)) => {
            draw(&root, title, x.0, y.0, x0..x1, (y0..y1).log_scale(), series).map_err(err)?
        }
        (Scale::Log(x0, x1), Scale::Linear(y0, y1)) => {
            draw(&root, title, x.0, y.0, (x0..x1).log_scale(), y0..y1, series).map_err(err)?
        }
        (Scale::Linear(x0, x1), Scale::Linear(y0, y1)) => {
            draw(&root, title, x.0, y.0, x0..x1, y0..y1, series).map_err(err)?
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn draw<X, Y>(
    root: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    xd: &str,
    yd: &str,
    xr: X,
    yr: Y,
    series: &[Series],
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr, yr)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(xd).y_desc(yd).label_style(("sans-serif", 14)).draw().map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).mix(0.95);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())
}

/// A normalised histogram of `values` over `[lo, hi]` in `bins` bins, as
/// (bin centre, share) points for a line chart.
pub fn histogram(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0usize; bins.max(1)];
    let width = (hi - lo) / counts.len() as f64;
    for &v in values {
        let i = ((f64::from(v) - lo) / width).floor();
        if i.is_finite() {
            let i = (i.max(0.0) as usize).min(counts.len() - 1);
            counts[i] += 1;
        }
    }
    let n = values.len().max(1) as f64;
    counts.iter().enumerate().map(|(i, &c)| (lo + (i as f64 + 0.5) * width, c as f64 / n)).collect()
}
