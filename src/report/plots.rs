//! The report's charts as inline SVG, drawn with `plotters` (its SVG backend writes text as
//! `<text>`, so the page needs no font or other asset).

use plotters::prelude::*;

use super::summary::CategorySummary;
use crate::metrics::curve_points::CurvePoint;
use crate::metrics::DEFAULT_FPR_LIMIT;

const SIZE: (u32, u32) = (340, 280);
const IMAGE_COLOUR: RGBColor = RGBColor(31, 119, 180);
const PIXEL_COLOUR: RGBColor = RGBColor(255, 127, 14);
const ANOMALOUS_COLOUR: RGBColor = RGBColor(214, 39, 40);
const NORMAL_COLOUR: RGBColor = RGBColor(44, 160, 44);
const CHANCE_COLOUR: RGBColor = RGBColor(160, 160, 160);

/// Why a chart could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("drawing the {chart} chart: {message}")]
pub struct PlotError {
    chart: &'static str,
    message: String,
}

type Result<T> = std::result::Result<T, PlotError>;

fn fail<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError { chart, message: e.to_string() }
}

/// A named series of a line chart.
struct Line<'a> {
    label: &'a str,
    colour: RGBColor,
    points: &'a [CurvePoint],
}

/// A line chart over `x_range × [0, 1]`.
fn line_chart(
    chart: &'static str,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    x_max: f64,
    lines: &[Line],
    chance: Option<[(f64, f64); 2]>,
) -> Result<String> {
    let err = fail(chart);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..x_max, 0f64..1.0001f64)
            .map_err(&err)?;
        plot.configure_mesh().x_desc(x_desc).y_desc(y_desc).x_labels(6).y_labels(6).draw().map_err(&err)?;
        if let Some(segment) = chance {
            plot.draw_series(LineSeries::new(segment, CHANCE_COLOUR.stroke_width(1))).map_err(&err)?;
        }
        for line in lines.iter().filter(|l| !l.points.is_empty()) {
            let colour = line.colour;
            plot.draw_series(LineSeries::new(line.points.iter().map(|p| (p.x, p.y)), colour.stroke_width(2)))
                .map_err(&err)?
                .label(line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        }
        legend(&mut plot, SeriesLabelPosition::LowerRight).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// The series labels of a chart, boxed, at `position`.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    plot: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    plot.configure_series_labels().position(position).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()
}

/// Image and pixel ROC curves, with the chance diagonal.
pub fn roc(summary: &CategorySummary) -> Result<String> {
    let (image, pixel) = (format_metric("image", summary.image_auroc), format_metric("pixel", summary.pixel_auroc));
    line_chart(
        "ROC",
        "ROC",
        ("false positive rate", "true positive rate"),
        1.0,
        &[
            Line { label: &image, colour: IMAGE_COLOUR, points: &summary.curves.image_roc },
            Line { label: &pixel, colour: PIXEL_COLOUR, points: &summary.curves.pixel_roc },
        ],
        Some([(0.0, 0.0), (1.0, 1.0)]),
    )
}

/// The image precision–recall curve, with the share of anomalous images (chance).
pub fn pr(summary: &CategorySummary) -> Result<String> {
    let labelled = (summary.normal + summary.anomalous).max(1) as f64;
    let base = summary.anomalous as f64 / labelled;
    let label = format_metric("image AUPR", summary.image_aupr);
    line_chart(
        "PR",
        "precision–recall (images)",
        ("recall", "precision"),
        1.0,
        &[Line { label: &label, colour: IMAGE_COLOUR, points: &summary.curves.image_pr }],
        Some([(0.0, base), (1.0, base)]),
    )
}

/// The PRO curve to FPR 0.3, with chance (PRO = FPR).
pub fn pro(summary: &CategorySummary) -> Result<String> {
    let label = format_metric("AUPRO", summary.aupro);
    line_chart(
        "PRO",
        "per-region overlap (pixels)",
        ("false positive rate", "PRO"),
        DEFAULT_FPR_LIMIT,
        &[Line { label: &label, colour: PIXEL_COLOUR, points: &summary.curves.pro }],
        Some([(0.0, 0.0), (DEFAULT_FPR_LIMIT, DEFAULT_FPR_LIMIT)]),
    )
}

/// Bins of the score histograms.
const BINS: usize = 24;

/// Histograms of the normal and the anomalous image scores over one range, and the image
/// threshold when the run has one.
pub fn histogram(summary: &CategorySummary, threshold: Option<f64>) -> Result<String> {
    let err = fail("histogram");
    let all = summary.normal_scores.iter().chain(&summary.anomalous_scores).chain(threshold.as_ref());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    // No score at all: the unit range; one distinct score: a unit range around it.
    let (lo, hi) = match (lo.is_finite(), hi > lo) {
        (false, _) => (0.0, 1.0),
        (true, false) => (lo - 0.5, lo + 0.5),
        (true, true) => (lo, hi),
    };
    let width = (hi - lo) / BINS as f64;
    let counts = |scores: &[f64]| {
        let mut c = vec![0u32; BINS];
        for &s in scores {
            c[(((s - lo) / width) as usize).min(BINS - 1)] += 1;
        }
        c
    };
    let (normal, anomalous) = (counts(&summary.normal_scores), counts(&summary.anomalous_scores));
    let top = normal.iter().chain(&anomalous).copied().max().unwrap_or(0).max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut plot = ChartBuilder::on(&root)
            .caption("image scores", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(lo..hi, 0u32..top + top / 8 + 1)
            .map_err(&err)?;
        plot.configure_mesh().x_desc("pred_score").y_desc("images").x_labels(5).draw().map_err(&err)?;
        for (name, colour, counts) in [("normal", NORMAL_COLOUR, &normal), ("anomalous", ANOMALOUS_COLOUR, &anomalous)]
        {
            let bars = counts.iter().enumerate().filter(|(_, &n)| n > 0).map(|(i, &n)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0), (x0 + width, n)], colour.mix(0.45).filled())
            });
            plot.draw_series(bars)
                .map_err(&err)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.mix(0.45).filled()));
        }
        if let Some(t) = threshold {
            plot.draw_series(LineSeries::new([(t, 0), (t, top + top / 8 + 1)], BLACK.stroke_width(2)))
                .map_err(&err)?
                .label("threshold")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
        }
        legend(&mut plot, SeriesLabelPosition::UpperRight).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

fn format_metric(name: &str, value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{name} {v:.3}"),
        None => format!("{name} undefined"),
    }
}
