//! The report page's look: its one inline style sheet (the CSP allows inline styles, nothing
//! else) and the colors the page's charts give before/after and chosen/rejected/other.

use super::chart;

pub(super) const STYLE: &str = r#"
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

pub(super) const BEFORE: &str = chart::PALETTE[0];
pub(super) const AFTER: &str = chart::PALETTE[1];
pub(super) const CHOSEN: &str = "#59a14f";
pub(super) const REJECTED: &str = "#e15759";
pub(super) const OTHER: &str = "#b8c0cc";
