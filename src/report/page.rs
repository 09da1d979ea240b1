//! The report as one HTML page: styles inline, charts as inline SVG, pictures as `data:` URIs,
//! no script and no external asset, so the file can be mailed, archived or served as it is. The
//! numbers behind it are embedded too, as JSON in `<script type="application/json"
//! id="promptad-report">`, for whoever wants to check or re-plot them.

use base64::Engine;
use html_escape::encode_text as text;
use serde::Serialize;

use super::gallery::{Group, Panels};
use super::summary::CategorySummary;

/// One gallery entry as shown.
pub struct ShownEntry {
    pub group: Group,
    pub image_id: String,
    pub defect_type: Option<String>,
    pub gt_label: Option<i8>,
    pub pred_score: f64,
    pub pred_label: Option<i8>,
    pub anomalous_pixels: Option<i64>,
    /// The panels, or why there are none.
    pub panels: Result<Panels, String>,
}

/// A category's part of the page.
pub struct CategoryPage {
    pub summary: CategorySummary,
    /// The SVG charts: ROC, PR, PRO, histogram (or why one could not be drawn).
    pub charts: Vec<Result<String, String>>,
    pub entries: Vec<ShownEntry>,
    /// Whether the gallery's groups are the run's decisions.
    pub decided: bool,
    /// A note on the gallery (e.g. the dataset could not be read).
    pub note: Option<String>,
}

/// The page's header facts.
pub struct PageHeader<'a> {
    pub out: &'a str,
    pub run: &'a str,
    pub calibrated: bool,
}

/// The embedded data: what the page shows, as numbers.
#[derive(Serialize)]
struct EmbeddedData<'a> {
    run: &'a str,
    out: &'a str,
    calibrated: bool,
    categories: Vec<&'a CategorySummary>,
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1500px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ccc; }
table.metrics { border-collapse: collapse; font-size: 14px; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics th { background: #f2f2f2; }
.note { background: #fff6d6; border: 1px solid #e5c96b; padding: 8px 12px; max-width: 1100px; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
.charts > div { border: 1px solid #ddd; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; border: 1px solid #ddd; padding: 6px; }
figure .panels { display: flex; gap: 4px; }
figure .panels div { text-align: center; font-size: 11px; color: #555; }
figure img { display: block; width: 150px; height: 150px; image-rendering: auto; }
figcaption { font-size: 12px; margin-top: 4px; max-width: 620px; }
.missing { width: 150px; height: 150px; background: #eee; display: flex; align-items: center; justify-content: center; }
";

/// The whole page.
pub fn render(header: &PageHeader, categories: &[CategoryPage]) -> String {
    let mut html = String::with_capacity(1 << 20);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(&format!("<title>promptad report: run {}</title>", text(header.run)));
    html.push_str(&format!("<style>{STYLE}</style></head><body>\n"));
    html.push_str("<h1>promptad report</h1>\n");
    let images: usize = categories.iter().map(|c| c.summary.images).sum();
    html.push_str(&format!(
        "<p>Run <code>{}</code> of <code>{}</code>: {} categor{}, {images} scored images. promptad {}.</p>\n",
        text(header.run),
        text(header.out),
        categories.len(),
        if categories.len() == 1 { "y" } else { "ies" },
        env!("CARGO_PKG_VERSION"),
    ));
    if !header.calibrated {
        html.push_str(
            "<p class=\"note\" id=\"no-calibration\"><b>No calibration: this run makes no decisions.</b> Its rows \
             have no <code>pred_label</code>, so this page shows no thresholds, no predicted masks and no \
             decision counts; the galleries show the lowest-scored defects and the highest-scored normal images \
             instead. Calibrate the model on a labelled scored run (<code>promptad calibrate</code>), then score \
             again.</p>\n",
        );
    }
    html.push_str(&metrics_table(categories, header.calibrated));
    for category in categories {
        html.push_str(&category_section(category));
    }
    let data = EmbeddedData {
        run: header.run,
        out: header.out,
        calibrated: header.calibrated,
        categories: categories.iter().map(|c| &c.summary).collect(),
    };
    // `</` cannot occur inside the script element: JSON escapes it harmlessly as `<\/`.
    let json = serde_json::to_string(&data).expect("report data serialises").replace("</", "<\\/");
    html.push_str(&format!("<script type=\"application/json\" id=\"promptad-report\">{json}</script>\n"));
    html.push_str("</body></html>\n");
    html
}

fn metrics_table(categories: &[CategoryPage], calibrated: bool) -> String {
    let mut html = String::from("<h2>Metrics</h2>\n<table class=\"metrics\" id=\"metrics\"><tr>");
    let mut heads = vec![
        "category",
        "images",
        "normal",
        "anomalous",
        "image AUROC",
        "image AUPR",
        "pixel AUROC",
        "AUPRO (0.3)",
        "F1-max",
    ];
    if calibrated {
        heads.extend(["image threshold", "decided anomalous", "TP", "FP", "FN", "TN", "precision", "recall", "F1"]);
    }
    for h in heads {
        html.push_str(&format!("<th>{h}</th>"));
    }
    html.push_str("</tr>\n");
    for c in categories {
        let s = &c.summary;
        html.push_str(&format!(
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>",
            anchor(&s.category),
            text(&s.category),
            s.images,
            s.normal,
            s.anomalous
        ));
        for v in [s.image_auroc, s.image_aupr, s.pixel_auroc, s.aupro, s.f1_max] {
            html.push_str(&format!("<td>{}</td>", number(v)));
        }
        if calibrated {
            match &s.decisions {
                Some(d) => {
                    let m = d.confusion;
                    html.push_str(&format!("<td>{}</td><td>{}</td>", number(d.image_threshold), d.predicted_anomalous));
                    for n in [m.true_positives, m.false_positives, m.false_negatives, m.true_negatives] {
                        html.push_str(&format!("<td>{n}</td>"));
                    }
                    for v in [d.precision, d.recall, d.f1] {
                        html.push_str(&format!("<td>{}</td>", number(v)));
                    }
                }
                None => html.push_str("<td colspan=\"9\">not calibrated</td>"),
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n<p>Every metric is exact for the stored scores (anomalib ≥ 2.3 definitions); empty where undefined (a class missing).</p>\n");
    html
}

fn category_section(c: &CategoryPage) -> String {
    let s = &c.summary;
    let mut html = format!("<section id=\"{}\"><h2>{}</h2>\n", anchor(&s.category), text(&s.category));
    if let Some(d) = &s.decisions {
        html.push_str(&format!(
            "<p>Calibration <code>{}</code>: image threshold {}{}; pixel threshold {}.</p>\n",
            text(&d.calibration_version),
            number(d.image_threshold),
            d.image_method.as_deref().map(|m| format!(" ({})", text(m))).unwrap_or_default(),
            d.pixel_threshold_q
                .map_or("none".to_string(), |q| format!("{q} (stored u16, score {:.4})", q as f64 / 65535.0)),
        ));
    }
    html.push_str("<div class=\"charts\">");
    for chart in &c.charts {
        match chart {
            Ok(svg) => html.push_str(&format!("<div>{svg}</div>")),
            Err(e) => html.push_str(&format!("<div class=\"missing\">{}</div>", text(e))),
        }
    }
    html.push_str("</div>\n");
    if let Some(note) = &c.note {
        html.push_str(&format!("<p class=\"note\">{}</p>\n", text(note)));
    }
    for group in Group::ALL {
        let entries: Vec<&ShownEntry> = c.entries.iter().filter(|e| e.group == group).collect();
        html.push_str(&format!("<h3>{}</h3>\n", group.title(c.decided)));
        if entries.is_empty() {
            html.push_str("<p>none</p>\n");
            continue;
        }
        html.push_str("<div class=\"gallery\">");
        for entry in entries {
            html.push_str(&figure(entry));
        }
        html.push_str("</div>\n");
    }
    html.push_str("</section>\n");
    html
}

fn figure(e: &ShownEntry) -> String {
    let mut html = String::from("<figure><div class=\"panels\">");
    match &e.panels {
        Ok(p) => {
            let contours =
                p.contours.as_ref().map(|c| img(c, "image/jpeg", "predicted (red) and true (green) contours"));
            for (picture, caption) in [
                (Some(img(&p.image, "image/jpeg", "image")), "image"),
                (Some(img(&p.truth, "image/png", "ground truth")), "ground truth"),
                (Some(img(&p.overlay, "image/jpeg", "anomaly map")), "anomaly map"),
                (contours, "predicted mask"),
            ] {
                let picture = picture.unwrap_or_else(|| "<div class=\"missing\">no pixel threshold</div>".into());
                html.push_str(&format!("<div>{picture}{caption}</div>"));
            }
        }
        Err(why) => html.push_str(&format!("<div class=\"missing\">{}</div>", text(why))),
    }
    let truth = match e.gt_label {
        Some(1) => format!("defect ({})", e.defect_type.as_deref().unwrap_or("?")),
        Some(_) => "good".to_string(),
        None => "unlabelled".to_string(),
    };
    let decision = match e.pred_label {
        Some(1) => ", decided anomalous".to_string(),
        Some(_) => ", decided normal".to_string(),
        None => String::new(),
    };
    let pixels = e.anomalous_pixels.map(|n| format!(", {n} anomalous pixels")).unwrap_or_default();
    html.push_str(&format!(
        "</div><figcaption><code>{}</code>: {}, pred_score {:.4}{decision}{pixels}</figcaption></figure>",
        text(&e.image_id),
        text(&truth),
        e.pred_score
    ));
    html
}

fn img(bytes: &[u8], mime: &str, alt: &str) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("<img alt=\"{alt}\" src=\"data:{mime};base64,{data}\">")
}

fn number(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// A fragment id for a category (letters, digits, '-' and '_' kept).
fn anchor(category: &str) -> String {
    let safe: String = category.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("category-{safe}")
}
