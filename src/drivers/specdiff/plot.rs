//! The PNG plot of a [`Curve`]: relative L2 error vs no cache (log scale) against the FLOPs
//! speedup, one line per mode (a point with error 0, identical to no cache, has no place on a
//! log scale and is left to the table), drawn with `plotters` (bitmap backend). Text needs a TrueType
//! font, read at run time: `$TESSERA_FONT`, else DejaVu Sans or Liberation Sans at their usual
//! Linux paths (Debian: `fonts-dejavu-core`); none found is an error that says so.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::Curve;
use crate::error::{Error, Result};

const OP: &str = "drivers::specdiff::plot";

/// Where a font is looked for after `$TESSERA_FONT`.
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn err(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg)
}

/// Registers the font once per process (plotters keeps it for the process's life).
fn font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let env = std::env::var("TESSERA_FONT").ok();
        let paths: Vec<String> = env
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| s.to_string()))
            .collect();
        let (path, bytes) = paths
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
            .ok_or_else(|| {
                format!(
                    "no TrueType font: set TESSERA_FONT or install one at {}",
                    FONT_PATHS.join(", ")
                )
            })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a TrueType font plotters can read"))
    })
    .clone()
    .map_err(err)
}

/// Writes the plot of `c` to `path` (PNG, 900×600).
///
/// Errors: no usable font, a curve with no point, a drawing or file error.
pub fn png(c: &Curve, path: &std::path::Path) -> Result<()> {
    font()?;
    if c.points.is_empty() {
        return Err(err("the curve has no point to plot"));
    }
    let draw = |e: &dyn std::fmt::Display| err(format!("drawing {}: {e}", path.display()));
    let x_max = c
        .points
        .iter()
        .map(|p| p.flops_speedup)
        .fold(1.0f64, f64::max)
        * 1.1;
    let errs: Vec<f64> = c
        .points
        .iter()
        .map(|p| p.rel_l2)
        .filter(|e| *e > 0.0)
        .collect();
    let y_min = errs.iter().cloned().fold(f64::INFINITY, f64::min).min(1e-3) / 2.0;
    let y_max = errs.iter().cloned().fold(0.0, f64::max).max(1e-2) * 2.0;
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let caption = format!(
        "SpecDiff vs peers: DiT {} tokens, {} blocks, {} steps ({})",
        c.config.tokens(),
        c.config.blocks,
        c.config.steps,
        c.device
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.9f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("FLOPs speedup vs no cache (×)")
        .y_desc("final latent rel. L2 error vs no cache")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(|e| draw(&e))?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    let mut names: Vec<&str> = Vec::new();
    for p in &c.points {
        if !names.contains(&p.mode.name()) {
            names.push(p.mode.name());
        }
    }
    for (k, name) in names.iter().enumerate() {
        let colour = colours[k % colours.len()];
        let mut pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter(|p| p.mode.name() == *name && p.rel_l2 > 0.0)
            .map(|p| (p.flops_speedup, p.rel_l2))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
