//! Grouped bar charts as PNG, drawn with plotters and a bundled font (no system fonts).

use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use autoglm_bench::{Chart, significant};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// A subset of DejaVu Sans (ASCII and a few symbols); see fonts/LICENSE-DejaVu.txt.
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");

const COLOURS: &[RGBColor] = &[
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
];

/// Draw `chart` into the PNG file `path`.
pub fn draw(chart: &Chart, path: &Path) -> anyhow::Result<()> {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The font is compiled in: failing to parse it is a build defect, not an input error.
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the bundled font does not parse");
        }
    });
    anyhow::ensure!(
        chart.series.iter().all(|s| s.values.len() == chart.groups.len()),
        "chart {}: every series needs one value per group",
        chart.file
    );
    let values: Vec<f64> = chart.series.iter().flat_map(|s| s.values.iter().copied()).collect();
    let (largest, smallest) = values
        .iter()
        .filter(|v| v.is_finite() && **v > 0.0)
        .fold((0f64, f64::MAX), |(hi, lo), &v| (hi.max(v), lo.min(v)));
    anyhow::ensure!(largest > 0.0, "chart {}: no positive values", chart.file);
    // On a log scale the bars are drawn in log10 units and the ticks labelled back.
    let scale = |v: f64| if chart.log_scale { v.max(smallest).log10() } else { v };
    let (bottom, top) = if chart.log_scale {
        (smallest.log10().floor(), largest.log10() + 0.35)
    } else {
        (0.0, largest * 1.18)
    };

    let per_group = chart.series.len() + 1;
    let slots = chart.groups.len() * per_group - 1;
    let label_slot = (chart.series.len() - 1) / 2;

    let root = BitMapBackend::new(path, (960, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut plot = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(72)
        .build_cartesian_2d((0..slots).into_segmented(), bottom..top)?;
    let groups = chart.groups.clone();
    let log = chart.log_scale;
    plot.configure_mesh()
        .disable_x_mesh()
        .x_labels(slots + 1)
        .x_label_formatter(&|slot| match slot {
            SegmentValue::CenterOf(k) if k % per_group == label_slot => {
                groups.get(k / per_group).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .y_desc(&chart.unit)
        .y_label_formatter(&|y| significant(if log { 10f64.powf(*y) } else { *y }))
        .label_style(("sans-serif", 15))
        .draw()?;

    for (j, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[j % COLOURS.len()];
        let bars = series.values.iter().enumerate().map(|(i, &v)| {
            let k = i * per_group + j;
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(k), bottom), (SegmentValue::Exact(k + 1), scale(v))],
                colour.filled(),
            );
            bar.set_margin(0, 0, 2, 2);
            bar
        });
        plot.draw_series(bars)?
            .label(series.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled()));
        let labels = series.values.iter().enumerate().map(|(i, &v)| {
            let k = i * per_group + j;
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Bottom,
                ),
            );
            Text::new(significant(v), (SegmentValue::CenterOf(k), scale(v)), style)
        });
        plot.draw_series(labels)?;
    }
    plot.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
