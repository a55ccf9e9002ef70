//! Rendering a report's document model: stable Markdown (`report.md`), and self-contained
//! HTML with inline CSS and SVG bar charts (`report.html`); [`svg_bar_chart`] also draws the
//! live page's charts.

use super::*;

// ---------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------

/// Escapes a table cell: `|` and `\` are escaped, line breaks become spaces. A cell
/// wrapped in `**…**` by the report itself stays bold.
pub(super) fn md_cell(s: &str) -> String {
    if let Some(inner) = s.strip_prefix("**").and_then(|r| r.strip_suffix("**")) {
        if !inner.is_empty() {
            return format!("**{}**", md_cell(inner));
        }
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '<' | '>' | '*' | '`' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Prose: one line, and no raw `<`/`>` that a Markdown renderer would take for HTML.
pub(super) fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

pub(super) fn render_markdown(title_note: &str, summary: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {REPORT_TITLE}");
    out.push('\n');
    if !title_note.is_empty() {
        let _ = writeln!(out, "Snapshot: {}", md_text(title_note));
        out.push('\n');
    }
    out.push_str("## Summary of Findings\n\n");
    for line in summary {
        let _ = writeln!(out, "- {}", md_text(line));
    }
    for section in sections {
        let _ = write!(out, "\n## {}\n", section.title);
        for block in &section.blocks {
            if matches!(block, Block::Chart(_)) {
                // Charts are drawn in the HTML report; the tables carry the numbers.
                continue;
            }
            out.push('\n');
            match block {
                Block::Para(p) => {
                    let _ = writeln!(out, "{}", md_text(p));
                }
                Block::Heading(h) => {
                    let _ = writeln!(out, "### {}", md_text(h));
                }
                Block::Chart(_) => {}
                Block::Table(t) => {
                    out.push('|');
                    for h in &t.headers {
                        let _ = write!(out, " {} |", md_cell(h));
                    }
                    out.push_str("\n|");
                    for numeric in &t.numeric {
                        out.push_str(if *numeric { " ---: |" } else { " :--- |" });
                    }
                    out.push('\n');
                    for row in &t.rows {
                        out.push('|');
                        for cell in row {
                            let _ = write!(out, " {} |", md_cell(cell));
                        }
                        out.push('\n');
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// HTML and SVG
// ---------------------------------------------------------------------------------------

/// Escapes text for HTML and XML (also inside attribute values).
pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `**bold**` cells made by the report render bold; everything else is escaped text.
pub(super) fn html_cell(s: &str) -> String {
    match s.strip_prefix("**").and_then(|r| r.strip_suffix("**")) {
        Some(inner) if !inner.is_empty() => format!("<strong>{}</strong>", xml_escape(inner)),
        _ => xml_escape(s),
    }
}

/// Inline markdown code spans (`like this`) in report prose become `<code>`.
pub(super) fn html_text(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", xml_escape(part));
        } else {
            out.push_str(&xml_escape(part));
        }
    }
    out
}

pub(super) fn truncate_label(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A horizontal bar chart as inline SVG: a title, one labelled bar per entry, each with
/// its value printed after the bar.
pub(super) fn svg_bar_chart(chart: &Chart) -> String {
    const WIDTH: f64 = 720.0;
    const LABEL_W: f64 = 200.0;
    const BAR_MAX: f64 = 380.0;
    const ROW_H: f64 = 24.0;
    const TOP: f64 = 36.0;
    let rows = chart.bars.len().max(1) as f64;
    let height = TOP + rows * ROW_H + 12.0;
    let max = chart.bars.iter().map(|b| b.value).filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
    let title = xml_escape(&chart.title);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" width=\"{WIDTH:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {WIDTH:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"{title}\">\n<title>{title}</title>\n<text x=\"0\" y=\"20\" class=\"ct\" font-size=\"14\" font-weight=\"600\">{title}</text>\n"
    );
    if chart.bars.is_empty() {
        let _ = writeln!(out, "<text x=\"{LABEL_W:.0}\" y=\"{:.0}\" class=\"cl\">no data</text>", TOP + 16.0);
    }
    for (i, bar) in chart.bars.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let w = if max > 0.0 && bar.value.is_finite() && bar.value > 0.0 { (bar.value / max * BAR_MAX).max(1.0) } else { 0.0 };
        let text_y = y + ROW_H / 2.0 + 4.0;
        let label = xml_escape(&truncate_label(&bar.label, 30));
        let full = xml_escape(&bar.label);
        let value = xml_escape(&bar.display);
        let _ = writeln!(
            out,
            "<g><title>{full}: {value}</title><text x=\"{:.0}\" y=\"{text_y:.1}\" class=\"cl\" fill=\"#1f2328\" text-anchor=\"end\">{label}</text><rect x=\"{LABEL_W:.0}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" class=\"cb\" fill=\"#4c78a8\"/><text x=\"{:.1}\" y=\"{text_y:.1}\" class=\"cv\" fill=\"#59636e\">{value}</text></g>",
            LABEL_W - 8.0,
            y + 3.0,
            ROW_H - 6.0,
            LABEL_W + w + 6.0,
        );
    }
    out.push_str("</svg>");
    out
}

pub(super) const CSS: &str =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;background:#fff;margin:0;line-height:1.45}
main{max-width:960px;margin:0 auto;padding:24px}
h1{font-size:1.8em;margin-bottom:0.2em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:0.2em;margin-top:1.8em}
h3{margin-top:1.4em}
p.note{color:#59636e;margin-top:0}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.92em}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left}
th{background:#f6f8fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
code{background:#f6f8fa;padding:0 3px;border-radius:3px}
figure{margin:1em 0}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .ct{font-size:14px;font-weight:600;fill:#1f2328}
svg .cl{fill:#1f2328}
svg .cv{fill:#59636e}
svg .cb{fill:#4c78a8}
ul.summary li{margin:0.2em 0}
";

pub(super) fn render_html(title_note: &str, summary: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>{}</title>", xml_escape(REPORT_TITLE));
    let _ = write!(out, "<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n");
    let _ = writeln!(out, "<h1>{}</h1>", xml_escape(REPORT_TITLE));
    if !title_note.is_empty() {
        let _ = writeln!(out, "<p class=\"note\">Snapshot: {}</p>", xml_escape(title_note));
    }
    out.push_str("<section id=\"summary\">\n<h2>Summary of Findings</h2>\n<ul class=\"summary\">\n");
    for line in summary {
        let _ = writeln!(out, "<li>{}</li>", html_text(line));
    }
    out.push_str("</ul>\n</section>\n");
    for section in sections {
        let _ = writeln!(out, "<section id=\"{}\">\n<h2>{}</h2>", section.id, xml_escape(&section.title));
        for block in &section.blocks {
            match block {
                Block::Para(p) => {
                    let _ = writeln!(out, "<p>{}</p>", html_text(p));
                }
                Block::Heading(h) => {
                    let _ = writeln!(out, "<h3>{}</h3>", xml_escape(h));
                }
                Block::Chart(c) => {
                    let _ = writeln!(out, "<figure>\n{}\n</figure>", svg_bar_chart(c));
                }
                Block::Table(t) => {
                    out.push_str("<table>\n<thead><tr>");
                    for (h, numeric) in t.headers.iter().zip(&t.numeric) {
                        let class = if *numeric { " class=\"num\"" } else { "" };
                        let _ = write!(out, "<th{class}>{}</th>", xml_escape(h));
                    }
                    out.push_str("</tr></thead>\n<tbody>\n");
                    for row in &t.rows {
                        out.push_str("<tr>");
                        for (cell, numeric) in row.iter().zip(&t.numeric) {
                            let class = if *numeric { " class=\"num\"" } else { "" };
                            let _ = write!(out, "<td{class}>{}</td>", html_cell(cell));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody>\n</table>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}
