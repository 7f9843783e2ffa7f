//! Inline SVG charts over plain data. Non-finite values are skipped; a chart without any
//! finite value still draws its frame and says "no data".

use std::fmt::Write as _;

use super::escape;

/// Series colors (Tableau 10), used in order.
pub const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f", "#ff9da7", "#bab0ac",
    "#1b5e20", "#5b3a8e",
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

/// The width of `text` in the charts' 12 px sans-serif, estimated on the wide side (DejaVu
/// Sans, the widest of the fonts the style names, which headless browsers here use): legend
/// items placed by it do not run into each other.
fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '|' | '!' | '\'' | 'I' => 3.6,
            ' ' | '(' | ')' | '[' | ']' | 'f' | 't' | 'r' | '-' => 4.9,
            'm' | 'w' | 'M' | 'W' | '@' | '%' => 11.2,
            c if c.is_ascii_uppercase() => 8.6,
            c if c.is_ascii_digit() => 7.7,
            c if c.is_ascii() => 7.4,
            // Wider scripts and symbols (×, −, CJK): a full em.
            _ => 12.0,
        })
        .sum()
}

/// Legend items laid out in rows above the plot; returns the SVG and the rows' height.
fn legend(items: &[(&str, &str, bool)], x0: f64, x1: f64, y0: f64) -> (String, f64) {
    let mut out = String::new();
    let (mut x, mut y) = (x0, y0);
    let mut rows = if items.is_empty() { 0.0 } else { 1.0 };
    for (name, color, dashed) in items {
        let w = 20.0 + text_width(name) + 16.0;
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

#[cfg(test)]
mod tests {
    use super::super::count;
    use super::super::style::{CHOSEN, OTHER, REJECTED};
    use super::*;

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

    /// Legend items never run into each other: each item's text, at the width Chromium gave it
    /// (`getComputedTextLength` of the charts' 12 px font, DejaVu Sans, measured 2026-12-07), ends
    /// before the next item on its row begins. The scorer study's legend overlapped before.
    #[test]
    fn legend_items_leave_room_for_their_rendered_text() {
        let measured = [
            ("MBR@8 embedding (windowed)", 192.0),
            ("MBR@8 ROUGE-L (answer-span)", 193.8),
            ("greedy", 41.8),
            ("random@8", 66.2),
            ("oracle@8", 56.6),
            ("NLL (chosen)", 78.3),
            ("reward accuracy", 99.5),
            ("after round 3", 78.5),
            ("hotpotqa-4k", 73.2),
        ];
        for (name, w) in measured {
            assert!(
                text_width(name) + 16.0 >= w + 4.0,
                "{name}: {} vs {w}",
                text_width(name)
            );
        }
        let items: Vec<(&str, &str, bool)> = measured.iter().map(|(n, _)| (*n, PALETTE[0], false)).collect();
        let (svg, height) = legend(&items, 66.0, 882.0, 40.0);
        let mut placed = Vec::new();
        for part in svg.split("<text x=\"").skip(1) {
            let x: f64 = part.split('"').next().expect("x").parse().expect("x");
            let y: f64 = part
                .split("y=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("y")
                .parse()
                .expect("y");
            placed.push((x, y));
        }
        assert_eq!(placed.len(), measured.len());
        for k in 1..placed.len() {
            let ((x0, y0), (x1, y1)) = (placed[k - 1], placed[k]);
            if y1 == y0 {
                assert!(
                    x1 - 20.0 >= x0 + measured[k - 1].1 + 4.0,
                    "{} runs into {}",
                    measured[k - 1].0,
                    measured[k].0
                );
            }
            assert!(x1 <= 882.0, "{} starts past the right edge", measured[k].0);
        }
        assert!(height >= 36.0, "the items need more than one row: {height}");
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
}
