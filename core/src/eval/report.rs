//! The run report (`sealong report`): one self-contained HTML page built from the parsed contents
//! of a run directory, with inline CSS and SVG charts drawn here. No scripts, fonts or network:
//! the page's Content-Security-Policy (`default-src 'none'`, inline styles only) forbids every
//! script and fetch, and every chart element carries an SVG `<title>` so hovering shows its
//! value. Every string that came from a file is HTML-escaped.
//!
//! The edge (the CLI) reads the files into [`ReportData`]; [`render`] returns the page. Each
//! part of a run may be missing (a partial run) or unreadable; the page shows what exists and
//! says what is missing. The charts are three general functions over plain data
//! ([`chart::line_chart`], [`chart::bar_chart`], [`chart::histogram`]).

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

/// The files of a run directory, relative to it, as `sealong run` writes them.
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const QUESTIONS: &str = "questions.jsonl";
    pub const SAMPLES: &str = "samples.jsonl";
    pub const SCORED: &str = "scored.jsonl";
    pub const SCORE_SUMMARY: &str = "scored.summary.json";
    pub const TRAIN_METRICS: &str = "train/metrics.jsonl";
    pub const EVAL_BEFORE: &str = "eval/before/metrics.json";
    pub const EVAL_AFTER: &str = "eval/after/metrics.json";
    /// The short-context check (`[eval] short`, `short_inputs`), when the run has one.
    pub const EVAL_SHORT_BEFORE: &str = "eval/before_short/metrics.json";
    pub const EVAL_SHORT_AFTER: &str = "eval/after_short/metrics.json";
    pub const RUN_SUMMARY: &str = "summary.json";
    /// Where the report goes by default.
    pub const REPORT: &str = "report.html";
}

/// What became of one file of the run directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Part<T> {
    /// The file does not exist (the stage has not run yet).
    #[default]
    Missing,
    /// The file exists but could not be used; the message says why (file and line).
    Unreadable(String),
    Loaded(T),
}

impl<T> Part<T> {
    /// The loaded value, if any.
    pub fn get(&self) -> Option<&T> {
        match self {
            Part::Loaded(v) => Some(v),
            _ => None,
        }
    }
}

/// A label field of any JSON type as text (`null` is none), so an unexpected type in a field
/// that is only displayed does not make the whole file unreadable.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// One record of `scored.jsonl`, the fields the report uses (everything else is ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ScoredRecord {
    /// The MBR score of each sample (`null` for a non-finite score).
    pub scores: Vec<Option<f64>>,
    pub chosen: Option<usize>,
    pub rejected: Option<usize>,
    /// SubEM of each sample, when the question has gold answers.
    pub sub_em: Option<Vec<bool>>,
    #[serde(deserialize_with = "lenient_string")]
    pub method: Option<String>,
}

/// What the report shows of the scored file: score distributions and SubEM rates (x 100).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredStats {
    pub questions: usize,
    pub samples: usize,
    /// The scoring method of the last record that names one.
    pub method: Option<String>,
    /// Finite scores of the chosen samples, the rejected samples, and all others.
    pub chosen_scores: Vec<f64>,
    pub rejected_scores: Vec<f64>,
    pub other_scores: Vec<f64>,
    /// Questions whose `sub_em` list matches their samples.
    pub with_gold: usize,
    /// Mean over questions of the per-question mean SubEM over samples.
    pub sub_em_all: Option<f64>,
    pub sub_em_chosen: Option<f64>,
    pub sub_em_rejected: Option<f64>,
    /// Any sample correct (oracle@N).
    pub sub_em_oracle: Option<f64>,
}

impl ScoredStats {
    /// Reduces scored records. Indices out of range are ignored; a sample that is both chosen
    /// and rejected (N = 1) counts as chosen.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a ScoredRecord>) -> Self {
        let mut st = ScoredStats::default();
        let mut sums = [0.0f64; 4];
        for r in records {
            st.questions += 1;
            st.samples += r.scores.len();
            if let Some(m) = &r.method {
                st.method = Some(m.clone());
            }
            for (i, s) in r.scores.iter().enumerate() {
                let Some(s) = s.filter(|s| s.is_finite()) else {
                    continue;
                };
                if r.chosen == Some(i) {
                    st.chosen_scores.push(s);
                } else if r.rejected == Some(i) {
                    st.rejected_scores.push(s);
                } else {
                    st.other_scores.push(s);
                }
            }
            let Some(sub) = r.sub_em.as_ref().filter(|s| !s.is_empty() && s.len() == r.scores.len()) else {
                continue;
            };
            let (Some(c), Some(j)) = (
                r.chosen.filter(|&c| c < sub.len()),
                r.rejected.filter(|&j| j < sub.len()),
            ) else {
                continue;
            };
            let f = |b: bool| f64::from(u8::from(b));
            st.with_gold += 1;
            sums[0] += sub.iter().map(|&b| f(b)).sum::<f64>() / sub.len() as f64;
            sums[1] += f(sub[c]);
            sums[2] += f(sub[j]);
            sums[3] += f(sub.iter().any(|&b| b));
        }
        if st.with_gold > 0 {
            let pct = |s: f64| Some(s / st.with_gold as f64 * 100.0);
            st.sub_em_all = pct(sums[0]);
            st.sub_em_chosen = pct(sums[1]);
            st.sub_em_rejected = pct(sums[2]);
            st.sub_em_oracle = pct(sums[3]);
        }
        st
    }
}

/// `scored.summary.json` (`sealong score`'s summary; SubEM values x 100).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ScoreSummary {
    #[serde(deserialize_with = "lenient_string")]
    pub method: Option<String>,
    pub questions: Option<u64>,
    pub questions_with_gold: Option<u64>,
    pub sub_em_max: Option<f64>,
    pub sub_em_random: Option<f64>,
    pub sub_em_average: Option<f64>,
    pub sub_em_prediction: Option<f64>,
    pub sub_em_chosen: Option<f64>,
    pub sub_em_rejected: Option<f64>,
}

/// One line of `train/metrics.jsonl` (the trainer's `StepMetrics`), every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrainStep {
    pub step: Option<f64>,
    pub total_steps: Option<f64>,
    pub epoch: Option<f64>,
    pub lr: Option<f64>,
    pub loss: Option<f64>,
    pub nll: Option<f64>,
    pub chosen_reward: Option<f64>,
    pub rejected_reward: Option<f64>,
    pub reward_accuracy: Option<f64>,
    pub margin: Option<f64>,
    pub log_odds: Option<f64>,
    pub grad_norm: Option<f64>,
    pub pairs: Option<f64>,
    pub tokens: Option<f64>,
    pub step_seconds: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

/// SubEM x 100 of one task (or the average over tasks) in `eval/*/metrics.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TaskScores {
    pub task: String,
    pub questions: Option<u64>,
    pub greedy: Option<f64>,
    pub mbr: Option<f64>,
    pub random: Option<f64>,
    pub oracle: Option<f64>,
    /// oracle@k for k = 1..n.
    pub oracle_curve: Vec<Option<f64>>,
}

/// `eval/{before,after}/metrics.json` (`sealong eval`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EvalMetrics {
    #[serde(deserialize_with = "lenient_string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub adapter: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub strategy: Option<String>,
    pub n: Option<u64>,
    pub max_new_tokens: Option<u64>,
    pub tasks: Vec<TaskScores>,
    pub average: Option<TaskScores>,
}

/// Everything the report shows, as read from a run directory.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    /// The run directory as the user named it (shown in the heading).
    pub run_dir: String,
    /// The run's config (TOML text).
    pub config: Part<String>,
    /// Records in `questions.jsonl`.
    pub questions: Part<usize>,
    /// Records in `samples.jsonl`.
    pub samples: Part<usize>,
    pub scored: Part<ScoredStats>,
    pub score_summary: Part<ScoreSummary>,
    pub train: Part<Vec<TrainStep>>,
    pub eval_before: Part<EvalMetrics>,
    pub eval_after: Part<EvalMetrics>,
    /// The short-context check before and after (both `Missing` when the run has none).
    pub eval_short_before: Part<EvalMetrics>,
    pub eval_short_after: Part<EvalMetrics>,
    /// `summary.json`, shown as a table whatever its shape.
    pub run_summary: Part<Value>,
    /// Problems that did not stop a file from being used (e.g. a skipped malformed line).
    pub warnings: Vec<String>,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline SVG charts over plain data. Non-finite values are skipped; a chart without any
/// finite value still draws its frame and says "no data".
pub mod chart {
    use std::fmt::Write as _;

    use super::escape;

    /// Series colors (Tableau 10), used in order.
    pub const PALETTE: [&str; 8] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
    ];

    /// Size, title and axis labels of a chart. `y_min`/`y_max` widen the y domain to include
    /// them (data outside still shows).
    #[derive(Debug, Clone)]
    pub struct Frame {
        pub title: String,
        pub x_label: String,
        pub y_label: String,
        pub width: f64,
        pub height: f64,
        pub y_min: Option<f64>,
        pub y_max: Option<f64>,
    }

    impl Frame {
        pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
            Frame {
                title: title.to_string(),
                x_label: x_label.to_string(),
                y_label: y_label.to_string(),
                width: 580.0,
                height: 320.0,
                y_min: None,
                y_max: None,
            }
        }

        pub fn y_range(mut self, lo: f64, hi: f64) -> Self {
            self.y_min = Some(lo);
            self.y_max = Some(hi);
            self
        }

        pub fn size(mut self, width: f64, height: f64) -> Self {
            self.width = width;
            self.height = height;
            self
        }
    }

    /// A line of (x, y) points; a non-finite point breaks the line.
    #[derive(Debug, Clone)]
    pub struct Series {
        pub name: String,
        pub color: String,
        pub dashed: bool,
        pub points: Vec<(f64, f64)>,
    }

    impl Series {
        pub fn new(name: &str, color: &str, points: Vec<(f64, f64)>) -> Self {
            Series {
                name: name.to_string(),
                color: color.to_string(),
                dashed: false,
                points,
            }
        }

        pub fn dashed(mut self) -> Self {
            self.dashed = true;
            self
        }
    }

    /// One bar per category (`None` or non-finite: no bar).
    #[derive(Debug, Clone)]
    pub struct Bars {
        pub name: String,
        pub color: String,
        pub values: Vec<Option<f64>>,
    }

    impl Bars {
        pub fn new(name: &str, color: &str, values: Vec<Option<f64>>) -> Self {
            Bars {
                name: name.to_string(),
                color: color.to_string(),
                values,
            }
        }
    }

    /// A group of values for a stacked histogram (groups are disjoint parts of the whole).
    #[derive(Debug, Clone)]
    pub struct Group {
        pub name: String,
        pub color: String,
        pub values: Vec<f64>,
    }

    impl Group {
        pub fn new(name: &str, color: &str, values: Vec<f64>) -> Self {
            Group {
                name: name.to_string(),
                color: color.to_string(),
                values,
            }
        }
    }

    /// A 1-2-5 step giving about `target` intervals over `span` (> 0).
    fn nice_step(span: f64, target: usize) -> f64 {
        let raw = span / target.max(1) as f64;
        let mag = 10f64.powf(raw.log10().floor());
        let norm = raw / mag;
        let k = if norm < 1.5 {
            1.0
        } else if norm < 3.0 {
            2.0
        } else if norm < 7.0 {
            5.0
        } else {
            10.0
        };
        k * mag
    }

    /// An axis domain widened to whole steps, and the step: `(lo, hi, step)`. A degenerate range
    /// is widened around its value. `None` if a bound is not finite.
    pub fn nice_domain(lo: f64, hi: f64, target: usize) -> Option<(f64, f64, f64)> {
        if !lo.is_finite() || !hi.is_finite() {
            return None;
        }
        let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()) {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= pad;
            hi += pad;
        }
        let step = nice_step(hi - lo, target);
        if !step.is_finite() || step <= 0.0 {
            return None;
        }
        // Snap to the step's grid, forgiving rounding noise in bounds that are already on it.
        let snap = |v: f64, up: bool| {
            let q = v / step;
            let r = q.round();
            let q = if (q - r).abs() < 1e-9 {
                r
            } else if up {
                q.ceil()
            } else {
                q.floor()
            };
            q * step
        };
        Some((snap(lo, false), snap(hi, true), step))
    }

    /// Tick positions covering `[lo, hi]` at a 1-2-5 step (about `target` intervals), each
    /// rounded to the step's precision; empty for non-finite bounds.
    pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
        let Some((lo, hi, step)) = nice_domain(lo, hi, target) else {
            return Vec::new();
        };
        ticks_of(lo, hi, step)
    }

    fn ticks_of(lo: f64, hi: f64, step: f64) -> Vec<f64> {
        let n = ((hi - lo) / step).round() as i64;
        let decimals = decimals_of(step);
        let scale = 10f64.powi(decimals as i32);
        (0..=n.clamp(0, 1000))
            .map(|i| {
                let v = lo + i as f64 * step;
                let r = (v * scale).round() / scale;
                if r == 0.0 { 0.0 } else { r }
            })
            .collect()
    }

    /// Decimal places that show a multiple of `step` exactly.
    fn decimals_of(step: f64) -> usize {
        (-(step.log10().floor())).clamp(0.0, 12.0) as usize
    }

    /// A tick's label at the axis's step: plain decimals, or scientific notation for very small
    /// or very large magnitudes.
    pub fn tick_label(v: f64, step: f64) -> String {
        let mag = v.abs().max(step.abs());
        if !(1e-3..1e6).contains(&mag) {
            if v == 0.0 {
                return "0".to_string();
            }
            let s = format!("{v:.1e}");
            return s.replace(".0e", "e");
        }
        format!("{v:.*}", decimals_of(step))
    }

    /// A number for tooltips and labels: up to 4 significant decimals, no trailing zeros.
    pub fn fmt_value(v: f64) -> String {
        if !v.is_finite() {
            return "n/a".to_string();
        }
        if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e7) {
            return format!("{v:.3e}");
        }
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".to_string() } else { s.to_string() }
    }

    /// A linear map from a domain to pixels.
    #[derive(Debug, Clone, Copy)]
    struct Scale {
        lo: f64,
        hi: f64,
        step: f64,
        a: f64,
        b: f64,
    }

    impl Scale {
        fn at(&self, v: f64) -> f64 {
            self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)
        }

        /// The multiples of the step inside the domain (all of them for a snapped domain).
        fn ticks(&self) -> Vec<f64> {
            let first = (self.lo / self.step - 1e-9).ceil() * self.step;
            let last = (self.hi / self.step + 1e-9).floor() * self.step;
            if last < first {
                return Vec::new();
            }
            ticks_of(first, last, self.step)
        }
    }

    /// The drawing area of a chart (pixels) after title, legend and axis labels.
    struct Plot {
        left: f64,
        right: f64,
        top: f64,
        bottom: f64,
    }

    const CHAR_W: f64 = 6.6;

    /// Legend items laid out in rows above the plot; returns the SVG and the rows' height.
    fn legend(items: &[(&str, &str, bool)], x0: f64, x1: f64, y0: f64) -> (String, f64) {
        let mut out = String::new();
        let (mut x, mut y) = (x0, y0);
        let mut rows = if items.is_empty() { 0.0 } else { 1.0 };
        for (name, color, dashed) in items {
            let w = 22.0 + name.chars().count() as f64 * CHAR_W + 14.0;
            if x > x0 && x + w > x1 {
                x = x0;
                y += 18.0;
                rows += 1.0;
            }
            if *dashed {
                let _ = write!(
                    out,
                    r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2.5" stroke-dasharray="5 3"/>"#,
                    x,
                    y - 4.0,
                    x + 16.0,
                    y - 4.0,
                    escape(color)
                );
            } else {
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{:.1}" width="14" height="10" fill="{}"/>"#,
                    x,
                    y - 9.0,
                    escape(color)
                );
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" class="legend">{}</text>"#,
                x + 20.0,
                y,
                escape(name)
            );
            x += w;
        }
        (out, rows * 18.0)
    }

    /// Opens the `<svg>` with title, legend and axis labels, and returns the plot area.
    fn open(frame: &Frame, items: &[(&str, &str, bool)], extra_bottom: f64) -> (String, Plot) {
        let (w, h) = (frame.width, frame.height);
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="{t}"><title>{t}</title><rect class="bg" x="0" y="0" width="{w:.0}" height="{h:.0}"/><text class="title" x="{:.1}" y="20">{t}</text>"#,
            w / 2.0,
            t = escape(&frame.title),
        );
        let left = 66.0;
        let right = w - 18.0;
        let (legend_svg, legend_h) = legend(items, left, right, 40.0);
        out.push_str(&legend_svg);
        let top = 34.0 + legend_h + 8.0;
        let bottom = h - 44.0 - extra_bottom;
        let _ = write!(
            out,
            r#"<text class="axis-label" x="{:.1}" y="{:.1}">{}</text><text class="axis-label" transform="translate(16 {:.1}) rotate(-90)">{}</text>"#,
            (left + right) / 2.0,
            h - 8.0,
            escape(&frame.x_label),
            (top + bottom) / 2.0,
            escape(&frame.y_label),
        );
        (
            out,
            Plot {
                left,
                right,
                top,
                bottom,
            },
        )
    }

    fn no_data(mut out: String, p: &Plot) -> String {
        let _ = write!(
            out,
            r#"<rect class="frame" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/><text class="nodata" x="{:.1}" y="{:.1}">no data</text></svg>"#,
            p.left,
            p.top,
            p.right - p.left,
            p.bottom - p.top,
            (p.left + p.right) / 2.0,
            (p.top + p.bottom) / 2.0
        );
        out
    }

    /// Horizontal grid lines with y tick labels, and the x axis line at the bottom.
    fn y_axis(out: &mut String, p: &Plot, ys: &Scale) {
        for t in ys.ticks() {
            let y = ys.at(t);
            let _ = write!(
                out,
                r#"<line class="grid" x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                p.left,
                p.right,
                p.left - 6.0,
                y + 4.0,
                tick_label(t, ys.step)
            );
        }
        let _ = write!(
            out,
            r#"<line class="axis" x1="{l:.1}" y1="{:.1}" x2="{l:.1}" y2="{:.1}"/><line class="axis" x1="{l:.1}" y1="{b:.1}" x2="{:.1}" y2="{b:.1}"/>"#,
            p.top,
            p.bottom,
            p.right,
            l = p.left,
            b = p.bottom,
        );
    }

    /// Tick marks and labels of a numeric x axis.
    fn x_axis(out: &mut String, p: &Plot, xs: &Scale) {
        for t in xs.ticks() {
            let x = xs.at(t);
            let _ = write!(
                out,
                r#"<line class="axis" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                p.bottom,
                p.bottom + 5.0,
                p.bottom + 18.0,
                tick_label(t, xs.step)
            );
        }
    }

    fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
        values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
    }

    fn with_hints(lo: f64, hi: f64, frame: &Frame) -> (f64, f64) {
        let lo = frame.y_min.filter(|v| v.is_finite()).map_or(lo, |m| lo.min(m));
        let hi = frame.y_max.filter(|v| v.is_finite()).map_or(hi, |m| hi.max(m));
        (lo, hi)
    }

    fn scale(lo: f64, hi: f64, target: usize, a: f64, b: f64) -> Option<Scale> {
        let (lo, hi, step) = nice_domain(lo, hi, target)?;
        Some(Scale { lo, hi, step, a, b })
    }

    /// Lines over numeric x. Points of a solid series are marked (with hover values) when it
    /// has at most 60 points; dashed series are reference lines without markers.
    pub fn line_chart(frame: &Frame, series: &[Series]) -> String {
        let items: Vec<(&str, &str, bool)> = series
            .iter()
            .map(|s| (s.name.as_str(), s.color.as_str(), s.dashed))
            .collect();
        let (mut out, p) = open(frame, &items, 0.0);
        let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
        let pts = || series.iter().flat_map(|s| s.points.iter().filter(finite));
        let (Some((xlo, xhi)), Some((ylo, yhi))) = (extent(pts().map(|p| p.0)), extent(pts().map(|p| p.1))) else {
            return no_data(out, &p);
        };
        let (ylo, yhi) = with_hints(ylo, yhi, frame);
        let x_target = (((p.right - p.left) / 80.0) as usize).max(2);
        let (Some(xs), Some(ys)) = (
            scale(xlo, xhi, x_target, p.left, p.right),
            scale(ylo, yhi, 5, p.bottom, p.top),
        ) else {
            return no_data(out, &p);
        };
        y_axis(&mut out, &p, &ys);
        x_axis(&mut out, &p, &xs);
        for s in series {
            let mut d = String::new();
            let mut pen_down = false;
            for &(x, y) in &s.points {
                if !(x.is_finite() && y.is_finite()) {
                    pen_down = false;
                    continue;
                }
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if pen_down { " L" } else { " M" },
                    xs.at(x),
                    ys.at(y)
                );
                pen_down = true;
            }
            if d.is_empty() {
                continue;
            }
            let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
            let _ = write!(
                out,
                r#"<path class="line" d="{}" stroke="{}"{dash}><title>{}</title></path>"#,
                d.trim_start(),
                escape(&s.color),
                escape(&s.name)
            );
            if s.points.len() <= 60 && !s.dashed {
                for &(x, y) in s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()) {
                    let _ = write!(
                        out,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: x = {}, y = {}</title></circle>"#,
                        xs.at(x),
                        ys.at(y),
                        escape(&s.color),
                        escape(&s.name),
                        fmt_value(x),
                        fmt_value(y)
                    );
                }
            }
        }
        out.push_str("</svg>");
        out
    }

    /// Grouped bars: one group per category, one bar per series, the value written above each
    /// bar when it is wide enough. Long category labels are slanted.
    pub fn bar_chart(frame: &Frame, categories: &[String], series: &[Bars]) -> String {
        let items: Vec<(&str, &str, bool)> = series
            .iter()
            .map(|s| (s.name.as_str(), s.color.as_str(), false))
            .collect();
        let label = |c: &String| {
            let n = c.chars().count();
            if n > 24 {
                format!("{}…", c.chars().take(23).collect::<String>())
            } else {
                c.clone()
            }
        };
        let labels: Vec<String> = categories.iter().map(label).collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64;
        let band_guess = (frame.width - 84.0) / categories.len().max(1) as f64;
        let slant = longest * CHAR_W > band_guess - 4.0;
        let extra = if slant {
            (longest * CHAR_W * 0.5 - 6.0).max(0.0)
        } else {
            0.0
        };
        let (mut out, p) = open(frame, &items, extra);
        let values = || series.iter().flat_map(|s| s.values.iter().flatten().copied());
        let Some((lo, hi)) = extent(values()) else {
            return no_data(out, &p);
        };
        let (lo, hi) = with_hints(lo.min(0.0), hi.max(0.0), frame);
        let Some(ys) = scale(lo, hi, 5, p.bottom, p.top) else {
            return no_data(out, &p);
        };
        y_axis(&mut out, &p, &ys);
        let band = (p.right - p.left) / categories.len().max(1) as f64;
        let bar_w = band * 0.8 / series.len().max(1) as f64;
        let base = ys.at(0.0f64.clamp(ys.lo, ys.hi));
        for (ci, cat) in categories.iter().enumerate() {
            let x0 = p.left + ci as f64 * band + band * 0.1;
            for (si, s) in series.iter().enumerate() {
                let Some(v) = s.values.get(ci).copied().flatten().filter(|v| v.is_finite()) else {
                    continue;
                };
                let x = x0 + si as f64 * bar_w;
                let y = ys.at(v);
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} · {}: {}</title></rect>"#,
                    x + 1.0,
                    y.min(base),
                    (bar_w - 2.0).max(1.0),
                    (y - base).abs(),
                    escape(&s.color),
                    escape(cat),
                    escape(&s.name),
                    fmt_value(v)
                );
                if bar_w >= 24.0 {
                    let _ = write!(
                        out,
                        r#"<text class="value" x="{:.1}" y="{:.1}" text-anchor="middle">{v:.1}</text>"#,
                        x + bar_w / 2.0,
                        if v >= 0.0 { y - 4.0 } else { y + 12.0 },
                    );
                }
            }
            let cx = p.left + (ci as f64 + 0.5) * band;
            if slant {
                let _ = write!(
                    out,
                    r#"<text class="tick" text-anchor="end" transform="translate({cx:.1} {:.1}) rotate(-30)">{}<title>{}</title></text>"#,
                    p.bottom + 14.0,
                    escape(&labels[ci]),
                    escape(cat)
                );
            } else {
                let _ = write!(
                    out,
                    r#"<text class="tick" x="{cx:.1}" y="{:.1}" text-anchor="middle">{}<title>{}</title></text>"#,
                    p.bottom + 18.0,
                    escape(&labels[ci]),
                    escape(cat)
                );
            }
        }
        out.push_str("</svg>");
        out
    }

    /// Counts of `values` in `bins` equal-width bins over `[lo, hi]` (the last bin is closed);
    /// non-finite and out-of-range values are skipped.
    pub fn bin_counts(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
        let mut counts = vec![0usize; bins];
        if bins == 0 || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            return counts;
        }
        let width = (hi - lo) / bins as f64;
        for &v in values.iter().filter(|v| v.is_finite() && **v >= lo && **v <= hi) {
            let i = (((v - lo) / width).floor() as usize).min(bins - 1);
            counts[i] += 1;
        }
        counts
    }

    /// A stacked histogram of disjoint groups over shared bins (`bins` = 0 picks about √n,
    /// between 8 and 40).
    pub fn histogram(frame: &Frame, groups: &[Group], bins: usize) -> String {
        let items: Vec<(String, &str)> = groups
            .iter()
            .map(|g| {
                let n = g.values.iter().filter(|v| v.is_finite()).count();
                (format!("{} ({n})", g.name), g.color.as_str())
            })
            .collect();
        let legend_items: Vec<(&str, &str, bool)> = items.iter().map(|(n, c)| (n.as_str(), *c, false)).collect();
        let (mut out, p) = open(frame, &legend_items, 0.0);
        let all = || groups.iter().flat_map(|g| g.values.iter().copied());
        let Some((mut lo, mut hi)) = extent(all()) else {
            return no_data(out, &p);
        };
        if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()) {
            let pad = if lo == 0.0 { 0.5 } else { lo.abs() * 0.05 };
            lo -= pad;
            hi += pad;
        }
        let n = all().filter(|v| v.is_finite()).count();
        let bins = if bins == 0 {
            ((n as f64).sqrt().round() as usize).clamp(8, 40)
        } else {
            bins
        };
        let counts: Vec<Vec<usize>> = groups.iter().map(|g| bin_counts(&g.values, lo, hi, bins)).collect();
        let max_total = (0..bins)
            .map(|b| counts.iter().map(|c| c[b]).sum::<usize>())
            .max()
            .unwrap_or(0);
        let x_target = (((p.right - p.left) / 80.0) as usize).max(2);
        let (Some(xs), Some(mut ys)) = (
            // The bins span the data exactly; ticks at round values inside it.
            scale(lo, hi, x_target, p.left, p.right).map(|s| Scale { lo, hi, ..s }),
            scale(0.0, (max_total as f64).max(1.0), 5, p.bottom, p.top),
        ) else {
            return no_data(out, &p);
        };
        if ys.step < 1.0 {
            ys.step = 1.0;
            ys.hi = ys.hi.ceil();
        }
        y_axis(&mut out, &p, &ys);
        x_axis(&mut out, &p, &xs);
        let width = (hi - lo) / bins as f64;
        for b in 0..bins {
            let (b0, b1) = (lo + b as f64 * width, lo + (b + 1) as f64 * width);
            let (x0, x1) = (xs.at(b0), xs.at(b1));
            let mut stacked = 0usize;
            for (g, c) in groups.iter().zip(&counts) {
                if c[b] == 0 {
                    continue;
                }
                let (ya, yb) = (ys.at(stacked as f64), ys.at((stacked + c[b]) as f64));
                let _ = write!(
                    out,
                    r##"<rect x="{:.1}" y="{yb:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#fff" stroke-width="0.5"><title>{}: {} in [{}, {}{}</title></rect>"##,
                    x0,
                    (x1 - x0).max(0.5),
                    ya - yb,
                    escape(&g.color),
                    escape(&g.name),
                    c[b],
                    fmt_value(b0),
                    fmt_value(b1),
                    if b + 1 == bins { "]" } else { ")" }
                );
                stacked += c[b];
            }
        }
        out.push_str("</svg>");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The page.

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#222;background:#f6f7f9;margin:0}
main{max-width:1200px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:24px;margin:8px 0 2px}
h2{font-size:19px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid #dde1e7}
h3{font-size:15px;margin:16px 0 6px}
.sub{color:#666;margin:0 0 12px;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 14px;min-width:170px}
.card .k{color:#666;font-size:12px}.card .v{font-size:22px;font-weight:600}
.card .d{font-size:13px}.up{color:#2a7d2a}.down{color:#b3261e}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px;margin:10px 0}
.charts .wide{grid-column:1/-1}
figure{margin:0;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:6px}
svg.chart{width:100%;height:auto;display:block}
svg.chart text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:12px;fill:#333}
svg.chart .title{font-size:14px;font-weight:600;text-anchor:middle}
svg.chart .axis-label{font-size:12px;fill:#555;text-anchor:middle}
svg.chart .tick{font-size:11px;fill:#555}
svg.chart .value{font-size:10px;fill:#333}
svg.chart .nodata{font-size:14px;fill:#999;text-anchor:middle}
svg.chart .bg{fill:#fff}
svg.chart .frame{fill:none;stroke:#ddd}
svg.chart .grid{stroke:#e8e8e8;stroke-width:1}
svg.chart .axis{stroke:#888;stroke-width:1}
svg.chart .line{fill:none;stroke-width:2;stroke-linejoin:round}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.avg td{font-weight:600;border-top:2px solid #ccd}
th.grp{text-align:center}
.gs{border-left:1px solid #ccd}
.ok{color:#2a7d2a}.missing{color:#8a6d00}.bad{color:#b3261e}
.note{background:#fff8e1;border:1px solid #f0d98c;border-radius:6px;padding:8px 12px;margin:8px 0}
.warn{background:#fdecea;border:1px solid #f3b8b3;border-radius:6px;padding:8px 12px;margin:8px 0}
details{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:6px 10px;margin:8px 0}
summary{cursor:pointer;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;font:12px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;margin:8px 0}
"#;

const BEFORE: &str = chart::PALETTE[0];
const AFTER: &str = chart::PALETTE[1];
const CHOSEN: &str = "#59a14f";
const REJECTED: &str = "#e15759";
const OTHER: &str = "#b8c0cc";

/// The report page for a run.
pub fn render(d: &ReportData) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>SEALONG report: {}</title><style>{STYLE}</style></head><body><main>",
        escape(&d.run_dir)
    );
    let _ = writeln!(
        h,
        "<h1>SEALONG run report</h1><p class=\"sub\">{}</p>",
        escape(&d.run_dir)
    );
    headline(&mut h, d);
    overview(&mut h, d);
    if !d.warnings.is_empty() {
        h.push_str("<div class=\"warn\"><b>Problems while reading the run</b><ul>");
        for w in &d.warnings {
            let _ = write!(h, "<li>{}</li>", escape(w));
        }
        h.push_str("</ul></div>\n");
    }
    evaluation(&mut h, d);
    short_check(&mut h, d);
    scoring(&mut h, d);
    training(&mut h, d);
    run_summary(&mut h, d);
    config(&mut h, d);
    h.push_str("</main></body></html>\n");
    h
}

/// A number with `dec` decimals, "–" for none or non-finite.
fn num(v: Option<f64>, dec: usize) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.dec$}"),
        None => "–".to_string(),
    }
}

fn delta_cell(before: Option<f64>, after: Option<f64>) -> String {
    match (before.filter(|v| v.is_finite()), after.filter(|v| v.is_finite())) {
        (Some(b), Some(a)) => {
            let d = a - b;
            let class = if d > 0.0 {
                "up"
            } else if d < 0.0 {
                "down"
            } else {
                ""
            };
            format!("<td class=\"num {class}\">{d:+.2}</td>")
        }
        _ => "<td class=\"num\">–</td>".to_string(),
    }
}

fn card(h: &mut String, key: &str, value: &str, detail: &str) {
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"d\">{detail}</div></div>",
        escape(key),
        escape(value)
    );
}

fn average(m: &EvalMetrics) -> Option<&TaskScores> {
    m.average.as_ref()
}

/// The few numbers that say how the round went.
fn headline(h: &mut String, d: &ReportData) {
    let mut cards = String::new();
    let before = d.eval_before.get().and_then(average);
    let after = d.eval_after.get().and_then(average);
    if let Some(b) = before.and_then(|a| a.greedy) {
        card(
            &mut cards,
            "Greedy SubEM before",
            &num(Some(b), 2),
            "average over tasks",
        );
    }
    if let Some(a) = after.and_then(|a| a.greedy) {
        let detail = match before.and_then(|b| b.greedy) {
            Some(b) => {
                let dlt = a - b;
                let class = if dlt >= 0.0 { "up" } else { "down" };
                format!("<span class=\"{class}\">{dlt:+.2}</span> vs before")
            }
            None => "average over tasks".to_string(),
        };
        card(&mut cards, "Greedy SubEM after", &num(Some(a), 2), &detail);
    }
    if let Some(s) = d.scored.get()
        && let (Some(c), Some(r)) = (s.sub_em_chosen, s.sub_em_rejected)
    {
        card(
            &mut cards,
            "SubEM chosen / rejected",
            &format!("{c:.1} / {r:.1}"),
            &format!("{} questions with gold", s.with_gold),
        );
    }
    if let Some(steps) = d.train.get().filter(|s| !s.is_empty()) {
        let last = &steps[steps.len() - 1];
        let total = last.total_steps.map(|t| format!(" of {t:.0}")).unwrap_or_default();
        card(
            &mut cards,
            "Training steps",
            &num(last.step.or(Some(steps.len() as f64)), 0),
            &format!("{}; final loss {}", escape(total.trim_start()), num(last.loss, 4)),
        );
    }
    if !cards.is_empty() {
        let _ = writeln!(h, "<div class=\"cards\">{cards}</div>");
    }
}

fn status_row(h: &mut String, file: &str, status: Result<String, (&str, String)>) {
    let (class, word, detail) = match status {
        Ok(detail) => ("ok", "present", detail),
        Err((class, detail)) => (class, if class == "missing" { "missing" } else { "unreadable" }, detail),
    };
    let _ = write!(
        h,
        "<tr><td><code>{}</code></td><td class=\"{class}\">{word}</td><td>{}</td></tr>",
        escape(file),
        escape(&detail)
    );
}

fn part_status<T>(p: &Part<T>, describe: impl Fn(&T) -> String) -> Result<String, (&'static str, String)> {
    match p {
        Part::Missing => Err(("missing", "not produced yet".to_string())),
        Part::Unreadable(e) => Err(("bad", e.clone())),
        Part::Loaded(v) => Ok(describe(v)),
    }
}

fn describe_eval(m: &EvalMetrics) -> String {
    let avg = m.average.as_ref().and_then(|a| a.greedy);
    format!("{} task(s), greedy SubEM average {}", m.tasks.len(), num(avg, 2))
}

/// Which files of the run exist, and what they hold.
fn overview(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Run contents</h2><table><tr><th>file</th><th>status</th><th>contents</th></tr>");
    status_row(
        h,
        files::CONFIG,
        part_status(&d.config, |c| format!("{} lines", c.lines().count())),
    );
    status_row(
        h,
        files::QUESTIONS,
        part_status(&d.questions, |n| format!("{n} questions")),
    );
    status_row(
        h,
        files::SAMPLES,
        part_status(&d.samples, |n| format!("{n} questions with samples")),
    );
    status_row(
        h,
        files::SCORED,
        part_status(&d.scored, |s| {
            format!(
                "{} questions, {} samples scored{}",
                s.questions,
                s.samples,
                s.method.as_ref().map(|m| format!(" by {m}")).unwrap_or_default()
            )
        }),
    );
    status_row(
        h,
        files::SCORE_SUMMARY,
        part_status(&d.score_summary, |s| {
            format!("MBR-selected SubEM {}", num(s.sub_em_prediction, 2))
        }),
    );
    status_row(
        h,
        files::TRAIN_METRICS,
        part_status(&d.train, |s| {
            let total = s.last().and_then(|l| l.total_steps);
            format!(
                "{} optimizer steps{}",
                s.len(),
                total.map(|t| format!(" of {t:.0}")).unwrap_or_default()
            )
        }),
    );
    status_row(h, files::EVAL_BEFORE, part_status(&d.eval_before, describe_eval));
    status_row(h, files::EVAL_AFTER, part_status(&d.eval_after, describe_eval));
    status_row(
        h,
        files::RUN_SUMMARY,
        part_status(&d.run_summary, |_| "run summary".to_string()),
    );
    h.push_str("</table>\n");
    let missing: Vec<&str> = [
        (files::CONFIG, matches!(d.config, Part::Missing)),
        (files::QUESTIONS, matches!(d.questions, Part::Missing)),
        (files::SAMPLES, matches!(d.samples, Part::Missing)),
        (files::SCORED, matches!(d.scored, Part::Missing)),
        (files::SCORE_SUMMARY, matches!(d.score_summary, Part::Missing)),
        (files::TRAIN_METRICS, matches!(d.train, Part::Missing)),
        (files::EVAL_BEFORE, matches!(d.eval_before, Part::Missing)),
        (files::EVAL_AFTER, matches!(d.eval_after, Part::Missing)),
        (files::RUN_SUMMARY, matches!(d.run_summary, Part::Missing)),
    ]
    .into_iter()
    .filter_map(|(f, m)| m.then_some(f))
    .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\">This is a partial run: {} of 9 files missing ({}). The sections below show what exists.</p>",
            missing.len(),
            missing
                .iter()
                .map(|f| format!("<code>{}</code>", escape(f)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// A section's note when its data is not there.
fn absent<T>(h: &mut String, what: &str, parts: &[(&str, &Part<T>)]) {
    for (file, p) in parts {
        match p {
            Part::Missing => {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">No {what}: <code>{}</code> is missing.</p>",
                    escape(file)
                );
            }
            Part::Unreadable(e) => {
                let _ = writeln!(
                    h,
                    "<p class=\"warn\">No {what} from <code>{}</code>: {}</p>",
                    escape(file),
                    escape(e)
                );
            }
            Part::Loaded(_) => {}
        }
    }
}

fn figure(h: &mut String, svg: &str, wide: bool) {
    let _ = write!(h, "<figure{}>{svg}</figure>", if wide { " class=\"wide\"" } else { "" });
}

/// The short-context check (the paper: short-context performance should not drop): greedy
/// score per short task before and after, with the change. Shown only when the run has one.
fn short_check(h: &mut String, d: &ReportData) {
    if matches!(
        (&d.eval_short_before, &d.eval_short_after),
        (Part::Missing, Part::Missing)
    ) {
        return;
    }
    h.push_str(
        "<h2>Short-context check (greedy × 100)</h2>\n<p class=\"note\">Each task's own metric: \
                SubEM for the dev questions with only their supporting paragraphs (<code>-short</code>), \
                the numeric final answer for GSM8K, choice accuracy for multiple choice.</p>\n",
    );
    absent(
        h,
        "short-context check before training",
        &[(files::EVAL_SHORT_BEFORE, &d.eval_short_before)],
    );
    absent(
        h,
        "short-context check after training",
        &[(files::EVAL_SHORT_AFTER, &d.eval_short_after)],
    );
    let (b, a) = (d.eval_short_before.get(), d.eval_short_after.get());
    let mut tasks: Vec<&str> = Vec::new();
    for m in [b, a].into_iter().flatten() {
        for t in &m.tasks {
            if !tasks.contains(&t.task.as_str()) {
                tasks.push(&t.task);
            }
        }
    }
    if tasks.is_empty() {
        return;
    }
    let greedy = |m: Option<&EvalMetrics>, task: Option<&str>| -> (Option<f64>, Option<u64>) {
        let row = m.and_then(|m| match task {
            Some(t) => m.tasks.iter().find(|x| x.task == t).cloned(),
            None => m.average.clone(),
        });
        (row.as_ref().and_then(|r| r.greedy), row.and_then(|r| r.questions))
    };
    h.push_str(
        "<table><tr><th>task</th><th class=\"num\">questions</th><th class=\"num\">before</th>\
                <th class=\"num\">after</th><th class=\"num\">Δ</th></tr>",
    );
    for task in tasks.iter().map(|t| Some(*t)).chain([None]) {
        let ((vb, qb), (va, qa)) = (greedy(b, task), greedy(a, task));
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            if task.is_none() { " class=\"avg\"" } else { "" },
            escape(task.unwrap_or("average")),
            qb.or(qa).map_or("–".to_string(), |q| q.to_string()),
            num(vb, 2),
            num(va, 2)
        );
        h.push_str(&delta_cell(vb, va));
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
}

/// Evaluation before and after training: tables and the three SubEM charts.
fn evaluation(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Evaluation (SubEM × 100)</h2>\n");
    absent(h, "evaluation before training", &[(files::EVAL_BEFORE, &d.eval_before)]);
    absent(h, "evaluation after training", &[(files::EVAL_AFTER, &d.eval_after)]);
    let runs: Vec<(&str, &EvalMetrics, &str)> = [
        ("before", d.eval_before.get(), BEFORE),
        ("after", d.eval_after.get(), AFTER),
    ]
    .into_iter()
    .filter_map(|(n, m, c)| m.map(|m| (n, m, c)))
    .collect();
    if runs.is_empty() {
        return;
    }
    // Settings.
    h.push_str("<table><tr><th></th><th>model</th><th>adapter</th><th>strategy</th><th class=\"num\">N</th><th class=\"num\">max new tokens</th></tr>");
    for (name, m, _) in &runs {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(m.model.as_deref().unwrap_or("–")),
            escape(m.adapter.as_deref().unwrap_or("none")),
            escape(m.strategy.as_deref().unwrap_or("–")),
            m.n.map_or("–".to_string(), |n| n.to_string()),
            m.max_new_tokens.map_or("–".to_string(), |n| n.to_string()),
        );
    }
    h.push_str("</table>\n");

    // Task rows: tasks in the order first seen, then the average.
    let mut tasks: Vec<String> = Vec::new();
    for (_, m, _) in &runs {
        for t in &m.tasks {
            if !tasks.contains(&t.task) {
                tasks.push(t.task.clone());
            }
        }
    }
    let find = |m: &EvalMetrics, task: &str| m.tasks.iter().find(|t| t.task == task).cloned();
    let row_of = |m: &EvalMetrics, i: usize| -> Option<TaskScores> {
        if i < tasks.len() {
            find(m, &tasks[i])
        } else {
            m.average.clone()
        }
    };
    let rows = tasks.len() + 1;
    type Metric = fn(&TaskScores) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("greedy", |t| t.greedy),
        ("MBR@N", |t| t.mbr),
        ("random@N", |t| t.random),
        ("oracle@N", |t| t.oracle),
    ];
    let shown: Vec<(&str, Metric)> = metrics
        .iter()
        .copied()
        .filter(|(_, f)| {
            runs.iter()
                .any(|(_, m, _)| (0..rows).any(|i| row_of(m, i).and_then(|t| f(&t)).is_some()))
        })
        .collect();
    let both = runs.len() == 2;
    h.push_str("<table><tr><th rowspan=\"2\">task</th><th rowspan=\"2\" class=\"num\">questions</th>");
    for (name, _) in &shown {
        let _ = write!(
            h,
            "<th colspan=\"{}\" class=\"grp gs\">{name}</th>",
            if both { 3 } else { 1 }
        );
    }
    h.push_str("</tr><tr>");
    for _ in &shown {
        for (k, (name, _, _)) in runs.iter().enumerate() {
            let _ = write!(h, "<th class=\"num{}\">{name}</th>", if k == 0 { " gs" } else { "" });
        }
        if both {
            h.push_str("<th class=\"num\">Δ</th>");
        }
    }
    h.push_str("</tr>");
    for i in 0..rows {
        let cells: Vec<Option<TaskScores>> = runs.iter().map(|(_, m, _)| row_of(m, i)).collect();
        let label = if i < tasks.len() { tasks[i].as_str() } else { "average" };
        let questions = cells.iter().flatten().find_map(|t| t.questions);
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"num\">{}</td>",
            if i == tasks.len() { " class=\"avg\"" } else { "" },
            escape(label),
            questions.map_or("–".to_string(), |q| q.to_string())
        );
        for (_, f) in &shown {
            let vals: Vec<Option<f64>> = cells.iter().map(|c| c.as_ref().and_then(f)).collect();
            for (k, v) in vals.iter().enumerate() {
                let _ = write!(
                    h,
                    "<td class=\"num{}\">{}</td>",
                    if k == 0 { " gs" } else { "" },
                    num(*v, 2)
                );
            }
            if both {
                h.push_str(&delta_cell(vals[0], vals[1]));
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n<div class=\"charts\">");

    // SubEM per task, before/after (greedy), the average included.
    let mut categories = tasks.clone();
    categories.push("average".to_string());
    let per_task: Vec<chart::Bars> = runs
        .iter()
        .map(|(name, m, color)| {
            chart::Bars::new(
                &format!("{name} training"),
                color,
                (0..rows).map(|i| row_of(m, i).and_then(|t| t.greedy)).collect(),
            )
        })
        .collect();
    let frame =
        chart::Frame::new("Greedy SubEM per task, before vs after training", "task", "SubEM × 100").size(1140.0, 340.0);
    figure(h, &chart::bar_chart(&frame, &categories, &per_task), true);

    // greedy / random / MBR / oracle averages.
    let order: [(&str, Metric); 4] = [
        ("greedy", |t| t.greedy),
        ("random@N", |t| t.random),
        ("MBR@N", |t| t.mbr),
        ("oracle@N", |t| t.oracle),
    ];
    let methods: Vec<(&str, Metric)> = order
        .into_iter()
        .filter(|(_, f)| runs.iter().any(|(_, m, _)| m.average.as_ref().and_then(f).is_some()))
        .collect();
    let cats: Vec<String> = methods.iter().map(|(n, _)| n.to_string()).collect();
    let method_bars: Vec<chart::Bars> = runs
        .iter()
        .map(|(name, m, color)| {
            chart::Bars::new(
                &format!("{name} training"),
                color,
                methods.iter().map(|(_, f)| m.average.as_ref().and_then(f)).collect(),
            )
        })
        .collect();
    let frame = chart::Frame::new(
        "Selection methods (average over tasks)",
        "answer chosen by",
        "SubEM × 100",
    );
    figure(h, &chart::bar_chart(&frame, &cats, &method_bars), false);

    // oracle@k, with the greedy level dashed.
    let mut curves = Vec::new();
    for (name, m, color) in &runs {
        let Some(avg) = &m.average else { continue };
        let pts: Vec<(f64, f64)> = avg
            .oracle_curve
            .iter()
            .enumerate()
            .map(|(k, v)| ((k + 1) as f64, v.unwrap_or(f64::NAN)))
            .collect();
        let kmax = pts.len().max(1) as f64;
        curves.push(chart::Series::new(&format!("oracle@k {name}"), color, pts));
        if let Some(g) = avg.greedy {
            curves.push(chart::Series::new(&format!("greedy {name}"), color, vec![(1.0, g), (kmax, g)]).dashed());
        }
    }
    let frame = chart::Frame::new(
        "Oracle@k: any of k samples correct (pass@k)",
        "k (samples)",
        "SubEM × 100",
    );
    figure(h, &chart::line_chart(&frame, &curves), false);
    h.push_str("</div>\n");
}

/// MBR scoring: the summary table, the score distribution and SubEM of chosen/rejected.
fn scoring(h: &mut String, d: &ReportData) {
    h.push_str("<h2>MBR scoring</h2>\n");
    absent(h, "scored samples", &[(files::SCORED, &d.scored)]);
    if let Some(s) = d.score_summary.get() {
        let _ = write!(
            h,
            "<table><tr><th colspan=\"2\">{} (method {}, {} questions, {} with gold answers)</th></tr>",
            files::SCORE_SUMMARY,
            escape(s.method.as_deref().unwrap_or("–")),
            s.questions.map_or("–".to_string(), |q| q.to_string()),
            s.questions_with_gold.map_or("–".to_string(), |q| q.to_string()),
        );
        for (label, v) in [
            ("oracle@N (best sample)", s.sub_em_max),
            ("random sample", s.sub_em_random),
            ("average over samples", s.sub_em_average),
            ("MBR-selected", s.sub_em_prediction),
            ("chosen", s.sub_em_chosen),
            ("rejected", s.sub_em_rejected),
        ] {
            let _ = write!(h, "<tr><td>{label}</td><td class=\"num\">{}</td></tr>", num(v, 2));
        }
        h.push_str("</table>\n");
    } else {
        absent(h, "score summary", &[(files::SCORE_SUMMARY, &d.score_summary)]);
    }
    let Some(s) = d.scored.get() else {
        return;
    };
    h.push_str("<div class=\"charts\">");
    let groups = [
        chart::Group::new("other samples", OTHER, s.other_scores.clone()),
        chart::Group::new("chosen", CHOSEN, s.chosen_scores.clone()),
        chart::Group::new("rejected", REJECTED, s.rejected_scores.clone()),
    ];
    let title = format!(
        "MBR scores of {} samples{}",
        s.samples,
        s.method.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
    );
    let frame = chart::Frame::new(&title, "MBR score", "samples");
    figure(h, &chart::histogram(&frame, &groups, 0), false);
    let cats: Vec<String> = ["all samples (mean)", "chosen", "rejected", "oracle (any)"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let bars = [chart::Bars::new(
        "SubEM",
        CHOSEN,
        vec![s.sub_em_all, s.sub_em_chosen, s.sub_em_rejected, s.sub_em_oracle],
    )];
    let frame = chart::Frame::new(
        &format!("SubEM of the training answers ({} questions with gold)", s.with_gold),
        "samples",
        "SubEM × 100",
    );
    figure(h, &chart::bar_chart(&frame, &cats, &bars), false);
    h.push_str("</div>\n");
}

/// (step, value) points; a line without a step number gets its 1-based position.
fn steps_of(steps: &[TrainStep], f: impl Fn(&TrainStep) -> Option<f64>) -> Vec<(f64, f64)> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step.unwrap_or((i + 1) as f64), f(s).unwrap_or(f64::NAN)))
        .collect()
}

/// The trailing mean over `window` points (non-finite values skipped).
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window.max(1));
            let vals: Vec<f64> = points[from..=i].iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
            let mean = if vals.is_empty() {
                f64::NAN
            } else {
                vals.iter().sum::<f64>() / vals.len() as f64
            };
            (points[i].0, mean)
        })
        .collect()
}

/// Training curves and the last step's numbers.
fn training(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Training</h2>\n");
    absent(h, "training metrics", &[(files::TRAIN_METRICS, &d.train)]);
    let Some(steps) = d.train.get() else {
        return;
    };
    if steps.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"note\"><code>{}</code> has no steps yet.</p>",
            files::TRAIN_METRICS
        );
        return;
    }
    let sum = |f: fn(&TrainStep) -> Option<f64>| steps.iter().filter_map(f).filter(|v| v.is_finite()).sum::<f64>();
    let last = &steps[steps.len() - 1];
    let seconds = sum(|s| s.step_seconds);
    let tokens = sum(|s| s.tokens);
    h.push_str("<table><tr><th>last step</th><th class=\"num\">epoch</th><th class=\"num\">loss</th><th class=\"num\">NLL</th><th class=\"num\">reward accuracy</th><th class=\"num\">margin</th><th class=\"num\">grad norm</th><th class=\"num\">tokens (all steps)</th><th class=\"num\">seconds (all steps)</th><th class=\"num\">tokens/s</th></tr>");
    let _ = writeln!(
        h,
        "<tr><td class=\"num\">{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{tokens:.0}</td><td class=\"num\">{seconds:.1}</td><td class=\"num\">{}</td></tr></table>",
        num(last.step.or(Some(steps.len() as f64)), 0),
        last.total_steps.map(|t| format!(" / {t:.0}")).unwrap_or_default(),
        num(last.epoch, 0),
        num(last.loss, 4),
        num(last.nll, 4),
        num(last.reward_accuracy, 3),
        num(last.margin, 4),
        num(last.grad_norm, 3),
        num((seconds > 0.0).then(|| tokens / seconds), 1),
    );
    let window = (steps.len() / 10).max(2);
    let smooth = steps.len() >= 20;
    h.push_str("<div class=\"charts\">");
    let loss = steps_of(steps, |s| s.loss);
    let mut series = vec![
        chart::Series::new("loss", chart::PALETTE[0], loss),
        chart::Series::new("NLL (chosen)", chart::PALETTE[1], steps_of(steps, |s| s.nll)),
    ];
    if steps.iter().any(|s| s.log_odds.is_some_and(|v| v != 0.0)) {
        series.push(chart::Series::new(
            "odds-ratio term (loss − NLL)",
            chart::PALETTE[4],
            {
                steps_of(steps, |s| match (s.loss, s.nll) {
                    (Some(l), Some(n)) => Some(l - n),
                    _ => None,
                })
            },
        ));
    }
    figure(
        h,
        &chart::line_chart(&chart::Frame::new("Loss", "step", "loss"), &series),
        false,
    );
    let acc = steps_of(steps, |s| s.reward_accuracy);
    let mut series = vec![chart::Series::new("reward accuracy", chart::PALETTE[2], acc.clone())];
    if smooth {
        series.push(chart::Series::new(
            &format!("mean of last {window} steps"),
            chart::PALETTE[6],
            moving_average(&acc, window),
        ));
    }
    figure(
        h,
        &chart::line_chart(
            &chart::Frame::new(
                "Reward accuracy (chosen reward > rejected)",
                "step",
                "fraction of pairs",
            )
            .y_range(0.0, 1.0),
            &series,
        ),
        false,
    );
    let margin = steps_of(steps, |s| s.margin);
    let (first, last_x) = (margin.first().map_or(1.0, |p| p.0), margin.last().map_or(1.0, |p| p.0));
    let series = vec![
        chart::Series::new("margin (chosen − rejected reward)", chart::PALETTE[3], margin),
        chart::Series::new("zero", "#999999", vec![(first, 0.0), (last_x, 0.0)]).dashed(),
    ];
    figure(
        h,
        &chart::line_chart(&chart::Frame::new("Reward margin", "step", "log-odds units"), &series),
        false,
    );
    let series = vec![chart::Series::new(
        "learning rate",
        chart::PALETTE[7],
        steps_of(steps, |s| s.lr),
    )];
    figure(
        h,
        &chart::line_chart(&chart::Frame::new("Learning rate", "step", "lr"), &series),
        false,
    );
    h.push_str("</div>\n");
}

/// A JSON value as HTML: objects as key/value tables, arrays of objects as tables with a column
/// per key, other arrays comma-joined, scalars as text.
fn json_html(v: &Value, depth: usize) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => escape(s),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => escape(&chart::fmt_value(f)),
            _ => escape(&n.to_string()),
        },
        Value::Null => "–".to_string(),
        other => escape(&other.to_string()),
    };
    if depth > 6 {
        return escape(&v.to_string());
    }
    match v {
        Value::Object(map) => {
            let mut out = String::from("<table>");
            for (k, v) in map {
                let _ = write!(
                    out,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(k),
                    json_html(v, depth + 1)
                );
            }
            out.push_str("</table>");
            out
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let mut keys: Vec<&String> = Vec::new();
            for it in items {
                if let Value::Object(m) = it {
                    for k in m.keys() {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
            }
            let mut out = String::from("<table><tr>");
            for k in &keys {
                let _ = write!(out, "<th>{}</th>", escape(k));
            }
            out.push_str("</tr>");
            for it in items {
                out.push_str("<tr>");
                for k in &keys {
                    let cell = it.get(k.as_str()).map_or(String::new(), |v| json_html(v, depth + 1));
                    let class = if it.get(k.as_str()).is_some_and(Value::is_number) {
                        " class=\"num\""
                    } else {
                        ""
                    };
                    let _ = write!(out, "<td{class}>{cell}</td>");
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
            out
        }
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => scalar(other),
    }
}

fn run_summary(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Run summary</h2>\n");
    absent(h, "run summary", &[(files::RUN_SUMMARY, &d.run_summary)]);
    if let Some(v) = d.run_summary.get() {
        h.push_str(&json_html(v, 0));
        h.push('\n');
    }
}

fn config(h: &mut String, d: &ReportData) {
    h.push_str("<h2>Configuration</h2>\n");
    absent(h, "configuration", &[(files::CONFIG, &d.config)]);
    if let Some(c) = d.config.get() {
        let _ = writeln!(
            h,
            "<details><summary>{} ({} lines)</summary><pre>{}</pre></details>",
            files::CONFIG,
            c.lines().count(),
            escape(c)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::chart::*;
    use super::*;

    fn count(hay: &str, needle: &str) -> usize {
        hay.matches(needle).count()
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ü"), "plain ü");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(3.0, 97.0, 5), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(
            nice_ticks(1.0, 40.0, 6),
            vec![0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
        );
        // Rounded to the step (no 0.30000000000000004).
        let t = nice_ticks(0.1, 0.7, 6);
        assert_eq!(t, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]);
        // Negative ranges and reversed bounds.
        assert_eq!(nice_ticks(2.0, -2.0, 4), vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        // Degenerate range: widened around the value.
        let t = nice_ticks(5.0, 5.0, 4);
        assert!(t.len() >= 2 && t[0] < 5.0 && *t.last().expect("ticks") > 5.0, "{t:?}");
        assert_eq!(nice_ticks(0.0, 0.0, 4), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        // Not finite: no ticks.
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert!(nice_ticks(0.0, f64::INFINITY, 5).is_empty());
        // Tiny learning rates.
        let t = nice_ticks(1e-5, 2e-4, 4);
        assert_eq!(t.first().copied(), Some(0.0));
        assert!((t[1] - 5e-5).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn tick_labels_match_the_step() {
        assert_eq!(tick_label(0.2, 0.2), "0.2");
        assert_eq!(tick_label(40.0, 20.0), "40");
        assert_eq!(tick_label(0.05, 0.05), "0.05");
        assert_eq!(tick_label(5e-5, 5e-5), "5e-5");
        assert_eq!(tick_label(0.0, 5e-5), "0");
        assert_eq!(tick_label(2e6, 1e6), "2e6");
        assert_eq!(fmt_value(41.666666), "41.6667");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(f64::NAN), "n/a");
    }

    #[test]
    fn empty_and_all_nan_series_say_no_data() {
        let f = Frame::new("Empty", "x", "y");
        for svg in [
            line_chart(&f, &[]),
            line_chart(&f, &[Series::new("s", "#000", vec![(1.0, f64::NAN), (f64::NAN, 2.0)])]),
            bar_chart(&f, &["a".to_string()], &[Bars::new("b", "#000", vec![None])]),
            bar_chart(&f, &[], &[]),
            histogram(&f, &[Group::new("g", "#000", vec![f64::NAN, f64::INFINITY])], 0),
        ] {
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
            assert!(svg.contains("no data"), "{svg}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn line_chart_skips_nan_and_breaks_the_line() {
        let f = Frame::new("Loss", "step", "loss");
        let s = Series::new(
            "loss",
            "#123456",
            vec![
                (1.0, 2.0),
                (2.0, f64::NAN),
                (3.0, 1.5),
                (4.0, 1.0),
                (f64::INFINITY, 3.0),
            ],
        );
        let svg = line_chart(&f, &[s]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // Two runs of the pen: M (1) then M (3) L (4).
        let d_start = svg.find(" d=\"").expect("path");
        let d = &svg[d_start + 4..];
        let d = &d[..d.find('"').expect("end")];
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert_eq!(count(&svg, "<circle"), 3);
        assert!(svg.contains("<title>loss: x = 3, y = 1.5</title>"), "{svg}");
        assert!(svg.contains(">step<") && svg.contains(">loss<"));
        // Every tick label is a round number.
        assert!(svg.contains(">1.0<") || svg.contains(">1<"), "{svg}");
    }

    #[test]
    fn many_points_draw_a_line_without_markers() {
        let pts: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, (i as f64).sin())).collect();
        let svg = line_chart(&Frame::new("t", "x", "y"), &[Series::new("s", "#000", pts)]);
        assert_eq!(count(&svg, "<circle"), 0);
        assert_eq!(count(&svg, "<path"), 1);
    }

    #[test]
    fn bars_escape_labels_and_skip_missing_values() {
        let cats = vec!["<b>x</b>".to_string(), "plain".to_string()];
        let svg = bar_chart(
            &Frame::new("T & <t>", "x", "y"),
            &cats,
            &[
                Bars::new("before", PALETTE[0], vec![Some(10.0), None]),
                Bars::new("after \"q\"", PALETTE[1], vec![Some(12.5), Some(f64::NAN)]),
            ],
        );
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(svg.contains("T &amp; &lt;t&gt;"));
        assert!(svg.contains("after &quot;q&quot;"));
        // Two bars drawn (the bg rect and legend swatches are not bars with titles).
        assert_eq!(count(&svg, "</title></rect>"), 2);
        assert!(svg.contains(">12.5<") && svg.contains(">10.0<"));
    }

    #[test]
    fn histogram_counts_every_finite_value_once() {
        assert_eq!(bin_counts(&[0.0, 0.5, 1.0, 0.99, f64::NAN], 0.0, 1.0, 2), vec![1, 3]);
        assert_eq!(bin_counts(&[1.0], 1.0, 1.0, 3), vec![0, 0, 0]);
        let svg = histogram(
            &Frame::new("h", "score", "samples"),
            &[
                Group::new("other", OTHER, vec![0.1, 0.2, 0.3, 0.35]),
                Group::new("chosen", CHOSEN, vec![0.9]),
                Group::new("rejected", REJECTED, vec![0.1, f64::NAN]),
            ],
            4,
        );
        // Legend counts finite values only.
        assert!(svg.contains("other (4)") && svg.contains("chosen (1)") && svg.contains("rejected (1)"));
        let total: usize = svg
            .split("<title>")
            .skip(2)
            .filter_map(|t| t.split(": ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
            .sum();
        assert_eq!(total, 6, "{svg}");
        // One value: still a chart.
        let svg = histogram(&Frame::new("h", "x", "y"), &[Group::new("g", "#000", vec![0.5])], 0);
        assert!(!svg.contains("no data"));
        assert_eq!(count(&svg, "</title></rect>"), 1);
    }

    #[test]
    fn scored_stats_reduce_records() {
        let recs = vec![
            ScoredRecord {
                scores: vec![Some(0.9), Some(0.1), Some(0.5), None],
                chosen: Some(0),
                rejected: Some(1),
                sub_em: Some(vec![true, false, true, false]),
                method: Some("embedding".into()),
            },
            ScoredRecord {
                scores: vec![Some(0.4), Some(0.6)],
                chosen: Some(1),
                rejected: Some(0),
                sub_em: None,
                method: None,
            },
        ];
        let s = ScoredStats::from_records(&recs);
        assert_eq!((s.questions, s.samples, s.with_gold), (2, 6, 1));
        assert_eq!(s.chosen_scores, vec![0.9, 0.6]);
        assert_eq!(s.rejected_scores, vec![0.1, 0.4]);
        assert_eq!(s.other_scores, vec![0.5]);
        assert_eq!(s.sub_em_all, Some(50.0));
        assert_eq!(
            (s.sub_em_chosen, s.sub_em_rejected, s.sub_em_oracle),
            (Some(100.0), Some(0.0), Some(100.0))
        );
        assert_eq!(s.method.as_deref(), Some("embedding"));
    }

    #[test]
    fn empty_report_names_every_missing_file_and_draws_nothing() {
        let html = render(&ReportData {
            run_dir: "runs/<x>".into(),
            ..Default::default()
        });
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("runs/&lt;x&gt;") && !html.contains("runs/<x>"));
        assert_eq!(count(&html, "<svg"), 0);
        for f in [
            files::CONFIG,
            files::QUESTIONS,
            files::SAMPLES,
            files::SCORED,
            files::SCORE_SUMMARY,
            files::TRAIN_METRICS,
            files::EVAL_BEFORE,
            files::EVAL_AFTER,
            files::RUN_SUMMARY,
        ] {
            assert!(html.contains(&format!("<code>{f}</code>")), "{f}");
        }
        assert!(html.contains("9 of 9 files missing"));
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn json_tables_escape_keys_and_values() {
        let v = serde_json::json!({"<k>": "<v>", "stages": [{"stage": "synth", "seconds": 1.5}, {"stage": "<s>"}]});
        let t = json_html(&v, 0);
        assert!(!t.contains("<k>") && !t.contains("<v>") && !t.contains("<s>"), "{t}");
        assert!(t.contains("<th>stage</th><th>seconds</th>"), "{t}");
        assert!(t.contains(">1.5<"));
    }

    #[test]
    fn label_fields_accept_any_json() {
        let m: EvalMetrics = serde_json::from_str(
            r#"{"model": {"path": "m.gguf"}, "adapter": null, "strategy": 3, "tasks": [{"task": "t", "greedy": 1.5, "mbr": null, "oracle_curve": [1.0, null]}]}"#,
        )
        .expect("parse");
        assert_eq!(m.model.as_deref(), Some(r#"{"path":"m.gguf"}"#));
        assert_eq!((m.adapter, m.strategy.as_deref()), (None, Some("3")));
        assert_eq!(m.tasks[0].oracle_curve, vec![Some(1.0), None]);
        assert!(m.average.is_none());
    }

    #[test]
    fn moving_average_skips_nan() {
        let pts = vec![(1.0, 1.0), (2.0, f64::NAN), (3.0, 0.0)];
        let m = moving_average(&pts, 2);
        assert_eq!(m[0], (1.0, 1.0));
        assert_eq!(m[1], (2.0, 1.0));
        assert_eq!(m[2], (3.0, 0.0));
    }

    #[test]
    fn the_short_context_check_shows_before_after_and_change() {
        let task = |name: &str, q: u64, g: f64| TaskScores {
            task: name.into(),
            questions: Some(q),
            greedy: Some(g),
            ..Default::default()
        };
        let metrics = |g8k: f64, short: f64| EvalMetrics {
            tasks: vec![task("gsm8k", 500, g8k), task("hotpotqa-short", 40, short)],
            average: Some(task("average", 0, (g8k + short) / 2.0)),
            ..Default::default()
        };
        let none = render(&ReportData::default());
        assert!(!none.contains("Short-context check"), "a run without one shows none");
        let html = render(&ReportData {
            eval_short_before: Part::Loaded(metrics(10.0, 50.0)),
            eval_short_after: Part::Loaded(metrics(12.5, 45.0)),
            ..Default::default()
        });
        assert_eq!(count(&html, "Short-context check"), 1);
        for cell in [
            "<td>gsm8k</td><td class=\"num\">500</td><td class=\"num\">10.00</td><td class=\"num\">12.50</td>",
            "<td>hotpotqa-short</td><td class=\"num\">40</td><td class=\"num\">50.00</td><td class=\"num\">45.00</td>",
            "<td>average</td>",
        ] {
            assert!(html.contains(cell), "{cell}");
        }
        assert!(html.contains("+2.50") && html.contains("-5.00"), "the change per task");
        // One side missing: the other still shows, and the missing file is named.
        let half = render(&ReportData {
            eval_short_before: Part::Loaded(metrics(10.0, 50.0)),
            ..Default::default()
        });
        assert!(half.contains(files::EVAL_SHORT_AFTER) && half.contains("<td>gsm8k</td>"));
    }
}
