//! The rounds section of the report (`sealong run` with `rounds = K`): average SubEM before
//! training and after each round, as a table and a line over rounds. Shown only when the run
//! directory holds a second round.

use std::fmt::Write as _;

use super::page::{absent, figure, num};
use super::{EvalMetrics, ReportData, TaskScores, chart, escape};

/// One line of the table and the chart: a metric of the average over tasks.
type Metric = fn(&TaskScores) -> Option<f64>;

const METRICS: [(&str, Metric); 4] = [
    ("greedy", |t| t.greedy),
    ("MBR@N", |t| t.mbr),
    ("random@N", |t| t.random),
    ("oracle@N", |t| t.oracle),
];

/// Appends the rounds section: nothing for a one-round run.
pub(super) fn section(h: &mut String, d: &ReportData) {
    if d.later_rounds.is_empty() {
        return;
    }
    h.push_str("<h2>Rounds (SubEM × 100, average over tasks)</h2>\n");
    for (i, p) in d.later_rounds.iter().enumerate() {
        let file = format!("round-{}/{}", i + 2, super::files::EVAL_AFTER);
        absent(h, &format!("evaluation after round {}", i + 2), &[(file.as_str(), p)]);
    }
    // Column 0 is the model before training, column k the model after round k.
    let mut columns: Vec<(String, Option<&EvalMetrics>)> = vec![
        ("before".into(), d.eval_before.get()),
        ("Round 1".into(), d.eval_after.get()),
    ];
    columns.extend(
        d.later_rounds
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("Round {}", i + 2), p.get())),
    );
    h.push_str("<table><tr><th>answer chosen by</th>");
    for (name, _) in &columns {
        let _ = write!(h, "<th class=\"num\">{}</th>", escape(name));
    }
    h.push_str("</tr>");
    let value = |m: Option<&EvalMetrics>, f: Metric| m.and_then(|m| m.average.as_ref()).and_then(f);
    for (name, f) in METRICS {
        let _ = write!(h, "<tr><td>{name}</td>");
        for (_, m) in &columns {
            let _ = write!(h, "<td class=\"num\">{}</td>", num(value(*m, f), 1));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
    let series: Vec<chart::Series> = METRICS
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| columns.iter().any(|(_, m)| value(*m, *f).is_some()))
        .map(|(i, (name, f))| {
            let points = columns
                .iter()
                .enumerate()
                .map(|(k, (_, m))| (k as f64, value(*m, *f).unwrap_or(f64::NAN)))
                .collect();
            chart::Series::new(name, chart::PALETTE[i], points)
        })
        .collect();
    let frame = chart::Frame::new("SubEM over rounds (0: before training)", "round", "SubEM × 100");
    figure(h, &chart::line_chart(&frame, &series), false);
}

#[cfg(test)]
mod tests {
    use super::super::{EvalMetrics, Part, ReportData, TaskScores, render};

    fn metrics(greedy: f64) -> EvalMetrics {
        EvalMetrics {
            average: Some(TaskScores {
                task: "average".into(),
                greedy: Some(greedy),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_second_round_adds_a_table_and_a_line_and_one_round_adds_nothing() {
        let one = ReportData {
            eval_before: Part::Loaded(metrics(10.0)),
            eval_after: Part::Loaded(metrics(12.5)),
            ..Default::default()
        };
        assert!(!render(&one).contains("SubEM over rounds"));
        let three = ReportData {
            later_rounds: vec![Part::Loaded(metrics(13.0)), Part::Missing],
            ..one
        };
        let html = render(&three);
        assert!(html.contains("SubEM over rounds") && html.contains("<th class=\"num\">Round 3</th>"));
        // The table row reads before, round 1, round 2, round 3 (missing).
        assert!(html.contains("<td>greedy</td><td class=\"num\">10.0</td><td class=\"num\">12.5</td><td class=\"num\">13.0</td><td class=\"num\">–</td>"), "{html}");
        assert!(
            html.contains("round-3/eval/after/metrics.json"),
            "the missing round is named"
        );
    }
}
