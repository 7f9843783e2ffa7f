//! A study's page (`sealong study`, `study.html`): per part its table (SubEM × 100 with the 95%
//! interval under each number, and the paired differences with the baseline) and a chart: the
//! curves over k of `study n` (the MBR@k line with its interval dashed beside it), grouped bars
//! for the others. Same style sheet, charts and CSP as the run report.

use std::fmt::Write as _;

use super::page::{figure, num};
use super::style::STYLE;
use super::{chart, escape};
use crate::eval::study::{AVERAGE, Part, Study, Table};

/// The study's page.
pub fn render(s: &Study) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>SEALONG study: {}</title><style>{STYLE}</style></head><body><main>",
        escape(&s.title)
    );
    let _ = writeln!(
        h,
        "<h1>{}</h1><p class=\"sub\">SubEM × 100 per task and the unweighted average; under each \
         number its bootstrap 95% interval.</p>",
        escape(&s.title)
    );
    for p in &s.parts {
        part(&mut h, p);
    }
    let settings = serde_json::to_string_pretty(&s.settings).unwrap_or_default();
    let _ = writeln!(
        h,
        "<details><summary>Settings</summary><pre>{}</pre></details>",
        escape(&settings)
    );
    h.push_str("</main></body></html>\n");
    h
}

/// Every part's heading, notes and tables, without charts (the run report's effects section).
pub fn tables(h: &mut String, s: &Study) {
    for p in &s.parts {
        let _ = writeln!(h, "<h3>{}</h3>", escape(&p.label));
        for n in &p.notes {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(n));
        }
        table(h, &p.table);
    }
}

fn part(h: &mut String, p: &Part) {
    let _ = writeln!(h, "<h2>{}</h2>", escape(&p.label));
    for n in &p.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(n));
    }
    table(h, &p.table);
    h.push_str("<div class=\"charts\">");
    if p.table.rows.iter().any(|r| r.curve.is_some()) {
        figure(h, &curves(&p.table), true);
    } else {
        figure(h, &bars(&p.table), true);
    }
    h.push_str("</div>\n");
}

fn header(h: &mut String, t: &Table, first: &str) {
    let _ = write!(h, "<table><tr><th>{}</th>", escape(first));
    for c in &t.columns {
        let _ = write!(h, "<th class=\"num\">{}</th>", escape(c));
    }
    h.push_str("</tr>");
}

fn table(h: &mut String, t: &Table) {
    header(h, t, "");
    for r in &t.rows {
        let _ = write!(h, "<tr><td>{}</td>", escape(&r.name));
        for c in &r.cells {
            let _ = write!(
                h,
                "<td class=\"num\" title=\"{} questions\">{}<br><small>[{}, {}]</small></td>",
                c.questions,
                num(Some(c.mean), 1),
                num(Some(c.lo), 1),
                num(Some(c.hi), 1)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
    let compared: Vec<_> = t
        .rows
        .iter()
        .filter(|r| r.cells.iter().any(|c| c.vs_baseline.is_some()))
        .collect();
    let Some(base) = t.baseline.as_deref().filter(|_| !compared.is_empty()) else {
        return;
    };
    let _ = writeln!(
        h,
        "<h3>Paired bootstrap against {}</h3><p class=\"sub\">The difference with its 95% interval; p: the \
         share of resamples in which it is not above 0.</p>",
        escape(base)
    );
    header(h, t, "difference");
    for r in compared {
        let _ = write!(h, "<tr><td>{} − {}</td>", escape(&r.name), escape(base));
        for c in &r.cells {
            match c.vs_baseline {
                Some(d) => {
                    let class = if d.lo > 0.0 {
                        "up"
                    } else if d.hi < 0.0 {
                        "down"
                    } else {
                        ""
                    };
                    let _ = write!(
                        h,
                        "<td class=\"num {class}\">{:+.1}<br><small>[{:+.1}, {:+.1}] {}</small></td>",
                        d.diff,
                        d.lo,
                        d.hi,
                        d.p_text()
                    );
                }
                None => h.push_str("<td class=\"num\">–</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
}

/// The average column's curves over k (rows without a k are flat reference lines).
fn curves(t: &Table) -> String {
    let avg = t.columns.iter().position(|c| c == AVERAGE).unwrap_or(0);
    let max_k = t
        .rows
        .iter()
        .filter_map(|r| r.curve.as_ref().map(|c| c.1))
        .max()
        .unwrap_or(1);
    let mut names: Vec<&str> = Vec::new();
    for r in &t.rows {
        if let Some((c, _)) = &r.curve
            && !names.contains(&c.as_str())
        {
            names.push(c);
        }
    }
    let mut series = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let color = chart::PALETTE[i % chart::PALETTE.len()];
        let on: Vec<(usize, &crate::eval::study::Cell)> = t
            .rows
            .iter()
            .filter_map(|r| match &r.curve {
                Some((c, k)) if c == name => Some((*k, &r.cells[avg])),
                _ => None,
            })
            .collect();
        let line = |f: fn(&crate::eval::study::Cell) -> f64| on.iter().map(|(k, c)| (*k as f64, f(c))).collect();
        series.push(chart::Series::new(&format!("{name}@k"), color, line(|c| c.mean)));
        series.push(chart::Series::new(&format!("{name}@k 95% low"), color, line(|c| c.lo)).dashed());
        series.push(chart::Series::new(&format!("{name}@k 95% high"), color, line(|c| c.hi)).dashed());
    }
    for (i, r) in t.rows.iter().filter(|r| r.curve.is_none()).enumerate() {
        let color = chart::PALETTE[(names.len() + i) % chart::PALETTE.len()];
        let m = r.cells[avg].mean;
        series.push(chart::Series::new(&r.name, color, vec![(1.0, m), (max_k as f64, m)]).dashed());
    }
    let frame = chart::Frame::new(
        "Curves over k (average over tasks; dashed: 95% interval)",
        "k (samples)",
        "SubEM × 100",
    )
    .size(900.0, 380.0);
    chart::line_chart(&frame, &series)
}

/// One group of bars per column, one bar per row.
fn bars(t: &Table) -> String {
    let series: Vec<chart::Bars> = t
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            chart::Bars::new(
                &r.name,
                chart::PALETTE[i % chart::PALETTE.len()],
                r.cells.iter().map(|c| Some(c.mean)).collect(),
            )
        })
        .collect();
    let frame = chart::Frame::new("SubEM × 100 per task", "task", "SubEM × 100").size(900.0, 380.0);
    chart::bar_chart(&frame, &t.columns, &series)
}

#[cfg(test)]
mod tests {
    use crate::eval::study::{self, RowInput, Sampled, Study};

    fn study(curves: bool) -> Study {
        let qs: Vec<Sampled> = (0..6)
            .map(|i| Sampled {
                task: if i < 3 { "a<b" } else { "c" }.into(),
                id: i.to_string(),
                greedy: i % 2 == 0,
                samples: vec![i % 2 == 0, i % 3 == 0],
            })
            .collect();
        let mut rows = vec![RowInput::new("random", study::values_of(&qs, study::random_value))];
        for k in 1..=2 {
            let r = RowInput::new(
                format!("oracle@{k}"),
                study::values_of(&qs, |q| study::oracle_at_k(q, k)),
            );
            rows.push(if curves {
                r.on_curve("oracle", k).compared()
            } else {
                r.compared()
            });
        }
        let table = study::table(&rows, Some("random"), 100, 1).expect("table");
        Study {
            study: "n".into(),
            title: "A <study>".into(),
            settings: serde_json::json!({"seed": 1}),
            parts: vec![study::Part {
                label: "predictions.jsonl".into(),
                table,
                notes: vec!["a note & more".into()],
            }],
        }
    }

    #[test]
    fn the_page_has_the_table_the_intervals_the_comparison_and_a_chart() {
        let html = super::render(&study(true));
        assert!(html.contains("A &lt;study&gt;") && !html.contains("A <study>"));
        assert!(html.contains("<th class=\"num\">a&lt;b</th>") && html.contains("<th class=\"num\">average</th>"));
        assert!(html.contains("Paired bootstrap against random"));
        assert!(html.contains("a note &amp; more"));
        assert!(html.contains("oracle@k 95% low") && html.contains("<svg"), "curves");
        assert!(!html.contains("<script"));
        let bars = super::render(&study(false));
        assert!(bars.contains("SubEM × 100 per task") && !bars.contains("95% low"));
        let md = study::markdown(&study(true));
        assert!(
            md.starts_with("# A <study>")
                && md.contains("## predictions.jsonl")
                && md.contains("| oracle@2 − random |")
        );
    }
}
