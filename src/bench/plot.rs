//! Figures from a `Summary` with plotters: bar charts with confidence-interval error bars and the
//! value printed on each bar, the per-epoch timeline, and the time breakdown. Each figure is drawn
//! once per backend (PNG and SVG). Text uses DejaVu Sans compiled into the binary, so figures
//! render on a headless machine without fonts.

use super::format;
use super::stats::Estimate;
use super::summary::{ConfigSummary, Summary};
use anyhow::{anyhow, Result};
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};
use std::sync::Once;

const SIZE: (u32, u32) = (900, 560);
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 6] = [
    RGBColor(76, 114, 176),
    RGBColor(221, 132, 82),
    RGBColor(85, 168, 104),
    RGBColor(196, 78, 82),
    RGBColor(129, 114, 179),
    RGBColor(147, 120, 96),
];

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (criterion's plots use it too).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (style, bytes) in
            [(FontStyle::Normal, dejavu::sans::regular()), (FontStyle::Bold, dejavu::sans::bold())]
        {
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                panic!("the embedded DejaVu font is valid");
            }
        }
    });
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// One bar: a label, the mean and its interval.
pub struct Bar {
    pub label: String,
    pub value: Estimate,
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A titled chart over `x` horizontally and [0, top] vertically.
fn new_chart<'a, DB: DrawingBackend + 'a>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    top: f64,
) -> Result<Chart<'a, DB>> {
    ChartBuilder::on(root)
        .caption(title, (FONT, 26).into_font().style(FontStyle::Bold))
        .margin(20)
        .x_label_area_size(76)
        .y_label_area_size(90)
        .build_cartesian_2d(x, 0.0..top.max(1e-9))
        .map_err(err)
}

/// The mesh of a chart whose x axis holds categories (labelled by `category_label`).
fn category_mesh<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    y_desc: &str,
    axis: &dyn Fn(f64) -> String,
) -> Result<()> {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .y_label_formatter(&|v| axis(*v))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(err)
}

/// Draws the series legend and writes the figure out.
fn legend_and_present<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Largest and smallest font size of a category's name, and the most lines it may take.
const LABEL_FONT: (u32, u32) = (17, 10);
const LABEL_LINES: usize = 4;

/// Writes a category's name under the x axis at pixel `at` (the category's position on the axis)
/// within `width` pixels, wrapped and shrunk by [`wrap_label`] so that no name runs into its
/// neighbour's, however many categories share the axis.
fn category_label<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    width: u32,
    text: &str,
) -> Result<()> {
    let measure = |s: &str, size: u32| {
        let style: TextStyle = (FONT, size).into_font().into();
        root.estimate_text_size(s, &style).map_or(u32::MAX, |(w, _)| w)
    };
    let (size, lines) = wrap_label(text, width, &measure);
    let style = (FONT, size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, line) in lines.into_iter().enumerate() {
        let y = at.1 + 8 + i as i32 * (size as i32 + 2);
        root.draw(&Text::new(line, (at.0, y), style.clone())).map_err(err)?;
    }
    Ok(())
}

/// A category's name as lines no wider than `width` (`measure(text, font size)` in pixels) and
/// the font size to write them in: the largest size at which the name, broken after its `_`s,
/// fits in at most [`LABEL_LINES`] lines; failing that, the smallest size with the name broken
/// wherever it must be.
fn wrap_label(text: &str, width: u32, measure: &dyn Fn(&str, u32) -> u32) -> (u32, Vec<String>) {
    let pieces: Vec<String> = text.split_inclusive('_').map(str::to_string).collect();
    let (largest, smallest) = LABEL_FONT;
    for size in (smallest..=largest).rev() {
        if let Some(lines) = pack(&pieces, width, size, measure) {
            if lines.len() <= LABEL_LINES {
                return (size, lines);
            }
        }
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let lines = pack(&chars, width, smallest, measure).unwrap_or_else(|| chars.clone());
    (smallest, lines)
}

/// `pieces` packed greedily into lines no wider than `width` at font size `size`; `None` when one
/// piece alone is wider.
fn pack(
    pieces: &[String],
    width: u32,
    size: u32,
    measure: &dyn Fn(&str, u32) -> u32,
) -> Option<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    for piece in pieces {
        if measure(piece, size) > width {
            return None;
        }
        match lines.last_mut() {
            Some(line) if measure(&format!("{line}{piece}"), size) <= width => line.push_str(piece),
            _ => lines.push(piece.clone()),
        }
    }
    Some(lines)
}

/// The pixels between two neighbouring categories of `chart`, less a gap, for their names.
fn category_width<DB: DrawingBackend>(chart: &Chart<'_, DB>) -> u32 {
    let (a, b) = (chart.backend_coord(&(0.0, 0.0)), chart.backend_coord(&(1.0, 0.0)));
    ((b.0 - a.0).unsigned_abs()).saturating_sub(10).max(20)
}

/// Draws labelled bars with error bars from `lower` to `upper` and the value on top.
fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    bars: &[Bar],
    show: &dyn Fn(f64) -> String,
    axis: &dyn Fn(f64) -> String,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let top = bars.iter().map(|b| b.value.upper.max(b.value.point)).fold(0.0, f64::max) * 1.18;
    let n = bars.len() as f64;
    let mut chart = new_chart(&root, title, -0.5..n - 0.5, top)?;
    category_mesh(&mut chart, y_desc, axis)?;
    let width = category_width(&chart);
    for (i, bar) in bars.iter().enumerate() {
        let x = i as f64;
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series([Rectangle::new(
                [(x - 0.32, 0.0), (x + 0.32, bar.value.point)],
                color.filled(),
            )])
            .map_err(err)?;
        if bar.value.lower.is_finite() && bar.value.upper.is_finite() {
            chart
                .draw_series([ErrorBar::new_vertical(
                    x,
                    bar.value.lower,
                    bar.value.point,
                    bar.value.upper,
                    BLACK.stroke_width(2),
                    16,
                )])
                .map_err(err)?;
        }
        let label_y = bar.value.upper.max(bar.value.point);
        let (px, py) = chart.backend_coord(&(x, label_y));
        let value_style =
            (FONT, 18).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
        root.draw(&Text::new(show(bar.value.point), (px, py - 6), value_style)).map_err(err)?;
        category_label(&root, chart.backend_coord(&(x, 0.0)), width, &bar.label)?;
    }
    root.present().map_err(err)
}

/// Mean epoch time of every epoch per configuration; the warm-up epochs are shaded.
fn draw_timeline<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    summary: &Summary,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let end = |c: &ConfigSummary| c.samples.first_epoch + c.samples.all_epochs_time.len();
    let epochs = summary.configs.iter().map(end).max().unwrap_or(1);
    let top = summary
        .configs
        .iter()
        .flat_map(|c| c.samples.all_epochs_time.iter().copied())
        .fold(0.0, f64::max)
        * 1.4;
    let mut chart = new_chart(&root, "Epoch time per epoch", -0.5..epochs as f64 - 0.5, top)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("training time (s, mean over ranks)")
        .x_labels(epochs + 1)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(err)?;
    // Summaries saved before rounds existed name no epochs: their warm-up led the run.
    let mut warm: Vec<usize> =
        summary.configs.iter().flat_map(|c| c.samples.warmup_epochs.iter().copied()).collect();
    if warm.is_empty() {
        warm.extend(0..summary.warmup_epochs);
    }
    warm.sort_unstable();
    warm.dedup();
    if !warm.is_empty() {
        let band = |e: usize| {
            Rectangle::new(
                [(e as f64 - 0.5, 0.0), (e as f64 + 0.5, top)],
                RGBColor(235, 235, 235).filled(),
            )
        };
        chart
            .draw_series(warm.into_iter().map(band))
            .map_err(err)?
            .label("warm-up (excluded)")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 6), (x + 16, y + 6)], RGBColor(220, 220, 220).filled())
            });
    }
    for (i, c) in summary.configs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = (c.samples.all_epochs_time.iter().enumerate())
            .map(|(e, &t)| ((c.samples.first_epoch + e) as f64, t))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(c.id.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(err)?;
    }
    legend_and_present(&mut chart, &root)
}

/// Stacked bars of the mean epoch time: compute, waiting for the slowest rank, all-reduce, batch
/// collation, and the rest.
fn draw_breakdown<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    summary: &Summary,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let n = summary.configs.len() as f64;
    let top = summary.configs.iter().map(|c| c.training_time.stats.mean).fold(0.0, f64::max) * 1.3;
    let mut chart = new_chart(&root, "Where the epoch time goes", -0.5..n - 0.5, top)?;
    category_mesh(&mut chart, "seconds per epoch (mean over ranks)", &|v| format!("{v:.2}"))?;
    let width = category_width(&chart);
    let parts =
        ["compute", "wait (imbalance)", "all-reduce", "batching", "other", "not split by the run"];
    let mut labelled = [false; 6];
    for (i, c) in summary.configs.iter().enumerate() {
        let s = &c.samples;
        let total = c.training_time.stats.mean;
        let mean_or_0 = |v: &[f64]| if v.is_empty() { 0.0 } else { super::stats::mean(v) };
        // A run whose records do not split the epoch (a foreign trainer's) gets one bar.
        let bars = match s.compute_time.is_empty() || s.allreduce_time.is_empty() {
            true => [0.0, 0.0, 0.0, 0.0, 0.0, total],
            false => {
                let [compute, allreduce, data, wait] =
                    [&s.compute_time, &s.allreduce_time, &s.data_time, &s.wait_time]
                        .map(|v| mean_or_0(v));
                let other = (total - compute - wait - allreduce - data).max(0.0);
                [compute, wait, allreduce, data, other, 0.0]
            }
        };
        let x = i as f64;
        let mut base = 0.0;
        for (k, v) in bars.into_iter().enumerate().filter(|&(_, v)| v > 0.0) {
            let series = chart
                .draw_series([Rectangle::new(
                    [(x - 0.3, base), (x + 0.3, base + v)],
                    COLORS[k].filled(),
                )])
                .map_err(err)?;
            if !labelled[k] {
                labelled[k] = true;
                let color = COLORS[k];
                series.label(parts[k]).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled())
                });
            }
            base += v;
        }
        category_label(&root, chart.backend_coord(&(x, 0.0)), width, &c.id)?;
    }
    legend_and_present(&mut chart, &root)
}

/// Draws one figure as `<dir>/<name>.png` and `<dir>/<name>.svg`.
fn both(dir: &Path, name: &str, draw: &dyn Fn(Backend) -> Result<()>) -> Result<PathBuf> {
    let png = dir.join(format!("{name}.png"));
    draw(Backend::Png(&png))?;
    draw(Backend::Svg(&dir.join(format!("{name}.svg"))))?;
    Ok(png)
}

enum Backend<'a> {
    Png(&'a Path),
    Svg(&'a Path),
}

macro_rules! on_backend {
    ($backend:expr, |$root:ident| $body:expr) => {
        match $backend {
            Backend::Png(p) => {
                let $root = BitMapBackend::new(p, SIZE).into_drawing_area();
                $body
            }
            Backend::Svg(p) => {
                let $root = SVGBackend::new(p, SIZE).into_drawing_area();
                $body
            }
        }
    };
}

/// The figures of a summary, written into `dir`; returns the PNG paths.
pub(crate) fn write_figures(summary: &Summary, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    std::fs::create_dir_all(dir)?;
    let level = (summary.confidence_level * 100.0).round();
    let bars = |f: &dyn Fn(&super::summary::ConfigSummary) -> Estimate| -> Vec<Bar> {
        summary.configs.iter().map(|c| Bar { label: c.id.clone(), value: f(c) }).collect()
    };
    let time = bars(&|c| {
        let s = &c.training_time.stats;
        Estimate { point: s.mean, lower: s.lower, upper: s.upper }
    });
    let tps = bars(&|c| {
        let s = &c.tokens_per_sec;
        Estimate { point: s.mean, lower: s.lower, upper: s.upper }
    });
    let time_title = format!("Training time per epoch (mean, {level}% CI)");
    let tps_title = format!("Throughput (tokens/s summed over ranks, {level}% CI)");
    let secs = |v: f64| format::seconds(v);
    let rate = |v: f64| format::rate(v);
    let plain = |v: f64| format!("{v:.2}");
    Ok(vec![
        both(dir, "training_time_comparison", &|b| {
            on_backend!(b, |root| draw_bars(
                root,
                &time_title,
                "seconds per epoch",
                &time,
                &secs,
                &plain
            ))
        })?,
        both(dir, "tokens_per_second_comparison", &|b| {
            on_backend!(b, |root| draw_bars(root, &tps_title, "tokens / s", &tps, &rate, &rate))
        })?,
        both(dir, "epoch_timeline", &|b| on_backend!(b, |root| draw_timeline(root, summary)))?,
        both(dir, "time_breakdown", &|b| on_backend!(b, |root| draw_breakdown(root, summary)))?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A font whose every character is `size / 2` pixels wide.
    fn measure(s: &str, size: u32) -> u32 {
        s.chars().count() as u32 * size / 2
    }

    #[test]
    fn category_names_wrap_at_underscores_and_shrink_until_each_line_fits() {
        // Room for the whole name at the largest size: one line.
        assert_eq!(wrap_label("ws1_bs16", 200, &measure), (17, vec!["ws1_bs16".to_string()]));
        // Less room: broken after underscores, still the largest size.
        let (size, lines) = wrap_label("ws2_bs32_independent", 100, &measure);
        assert_eq!((size, lines.join("|").as_str()), (17, "ws2_bs32_|independent"));
        // Every bench id, on axes of 2 to 16 categories in a 790-pixel plot: no line is wider
        // than its slot, and at most four lines.
        for n in 2..=16u32 {
            let width = 790 / n - 10;
            for id in [
                "ws1_bs16",
                "ws16_bs256_independent",
                "pytorch-eager_ws1_bs16",
                "pytorch-ddp_ws16_bs256",
                "ws4_bs64_balanced",
                "dynamic_buckets",
            ] {
                let (size, lines) = wrap_label(id, width, &measure);
                assert!(lines.len() <= LABEL_LINES, "{id} at {n}: {lines:?}");
                assert!(lines.iter().all(|l| measure(l, size) <= width), "{id} at {n}: {lines:?}");
                assert_eq!(lines.concat(), id, "nothing lost");
            }
        }
    }
}
