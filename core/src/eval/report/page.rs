//! The page: [`render`] writes the HTML document, section by section (headline cards, the files
//! overview, evaluation, scoring, training, the run's summary and config), from [`ReportData`];
//! charts come from [`chart`], the look from [`style`](super::style).

use std::fmt::Write as _;

use serde_json::Value;

use super::style::{AFTER, BEFORE, CHOSEN, OTHER, REJECTED, STYLE};
use super::{EvalMetrics, Part, ReportData, TaskScores, TrainStep, chart, escape, files};

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
    effects(&mut h, d);
    short_check(&mut h, d);
    super::rounds::section(&mut h, d);
    scoring(&mut h, d);
    training(&mut h, d);
    run_summary(&mut h, d);
    config(&mut h, d);
    h.push_str("</main></body></html>\n");
    h
}

/// A number with `dec` decimals, "–" for none or non-finite.
pub(super) fn num(v: Option<f64>, dec: usize) -> String {
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

/// The measured effect with intervals (`effects/study.json`): each table of `sealong study
/// round`, without its chart (the report draws the same numbers above).
fn effects(h: &mut String, d: &ReportData) {
    match &d.effects {
        Part::Loaded(s) => {
            h.push_str("<h2>Effects with 95% intervals</h2><p class=\"sub\">Greedy SubEM × 100 per task before and \
                        after training and at N against random, each with its bootstrap 95% interval; the differences \
                        are paired over the same questions (<code>effects/</code>, <code>sealong study round</code>).</p>");
            super::study::tables(h, s);
        }
        Part::Unreadable(e) => {
            let _ = writeln!(h, "<div class=\"warn\">effects: {}</div>", escape(e));
        }
        Part::Missing => {}
    }
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
pub(super) fn absent<T>(h: &mut String, what: &str, parts: &[(&str, &Part<T>)]) {
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

pub(super) fn figure(h: &mut String, svg: &str, wide: bool) {
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
        // A stage still running (the report's own, while it writes this page) has no final
        // figures yet: it is named, not tabulated.
        let mut v = v.clone();
        let mut running = Vec::new();
        if let Some(stages) = v.get_mut("stages").and_then(Value::as_array_mut) {
            stages.retain(|s| {
                let on = s.get("running").and_then(Value::as_bool) == Some(true);
                if on {
                    running.push(s.get("stage").and_then(Value::as_str).unwrap_or("?").to_string());
                }
                !on
            });
        }
        h.push_str(&json_html(&v, 0));
        h.push('\n');
        if !running.is_empty() {
            let _ = writeln!(
                h,
                "<p class=\"note\">Still running when this page was written: {}.</p>",
                escape(&running.join(", "))
            );
        }
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
    use super::super::count;
    use super::*;

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

    /// The round's effects (`effects/study.json`) appear as tables with their paired
    /// differences; a run without them shows no section.
    #[test]
    fn effects_show_the_study_round_tables() {
        use crate::eval::study::{self, Part as StudyPart, RowInput, Study, Values};
        let values = |xs: [f64; 4]| -> Values {
            let mut v = Values::new();
            for (i, x) in xs.into_iter().enumerate() {
                v.entry("musique-4k".into()).or_default().insert(format!("q{i}"), x);
            }
            v
        };
        let rows = [
            RowInput::new("before", values([1.0, 0.0, 0.0, 0.0])),
            RowInput::new("after", values([1.0, 1.0, 1.0, 0.0])).compared(),
        ];
        let effects = Study {
            study: "round".into(),
            title: "t".into(),
            settings: serde_json::json!({}),
            parts: vec![StudyPart {
                label: "Greedy, before vs after training".into(),
                table: study::table(&rows, Some("before"), 200, 1).expect("table"),
                notes: vec![],
            }],
        };
        assert!(!render(&ReportData::default()).contains("Effects with 95% intervals"));
        let html = render(&ReportData {
            effects: Part::Loaded(effects),
            ..Default::default()
        });
        assert_eq!(count(&html, "Effects with 95% intervals"), 1);
        assert!(html.contains("<h3>Greedy, before vs after training</h3>"), "{html}");
        assert!(
            html.contains("<td>after − before</td>") && html.contains("+50.0"),
            "{html}"
        );
    }

    /// A stage marked running in summary.json (the report's own, as `run` writes the page) is
    /// named, not tabulated, so the page does not depend on when the stage began.
    #[test]
    fn running_stages_are_named_not_tabulated() {
        let html = render(&ReportData {
            run_summary: Part::Loaded(serde_json::json!({"stages": [
                {"stage": "score", "seconds": 1.5, "runs": 1},
                {"stage": "report", "seconds": 0.0, "runs": 0, "running": true}
            ]})),
            ..Default::default()
        });
        assert!(html.contains("<td>score</td>"), "{html}");
        assert!(!html.contains("<td>report</td>"), "{html}");
        assert!(
            html.contains("Still running when this page was written: report."),
            "{html}"
        );
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
