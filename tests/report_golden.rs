//! The findings report for a fixed seed is a golden file. After an intended change,
//! regenerate it with:
//!
//!     QUESTLOG_BLESS=1 cargo test --release --test report_golden
//!
//! and review the diff of `fixtures/report-seed42-20000.md` like code.

mod common;

use std::path::PathBuf;

use common::*;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/report-seed42-20000.md")
}

#[test]
fn report_for_seed_42_matches_the_golden_file_and_its_html_has_charts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    questlog_ok(d, &["generate", "--seed", "42", "--events", "20000"]);
    questlog_ok(d, &["project"]);
    let out = d.join("out");
    let printed = questlog_ok(d, &["report", "--out", out.to_str().unwrap()]);
    assert!(printed.contains("report.md"), "{printed}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();

    // The same log in many small steps gives the same report as one step.
    let d2 = tempfile::tempdir().unwrap();
    questlog_ok(d2.path(), &["generate", "--seed", "42", "--events", "20000"]);
    questlog_ok(d2.path(), &["project", "--step-events", "777"]);
    let out2 = d2.path().join("out");
    questlog_ok(d2.path(), &["report", "--out", out2.to_str().unwrap()]);
    assert!(md == std::fs::read_to_string(out2.join("report.md")).unwrap(), "report depends on the step schedule");

    if std::env::var_os("QUESTLOG_BLESS").is_some() {
        std::fs::write(golden_path(), &md).unwrap();
        eprintln!("blessed {}", golden_path().display());
    } else {
        let golden = std::fs::read_to_string(golden_path())
            .expect("fixtures/report-seed42-20000.md is missing; run with QUESTLOG_BLESS=1 to create it");
        if md != golden {
            let line = md.lines().zip(golden.lines()).position(|(a, b)| a != b).unwrap_or(md.lines().count().min(golden.lines().count()));
            panic!(
                "report.md differs from {} at line {}:\n  got:      {:?}\n  expected: {:?}\n(regenerate with QUESTLOG_BLESS=1 if the change is intended)",
                golden_path().display(),
                line + 1,
                md.lines().nth(line),
                golden.lines().nth(line)
            );
        }
    }

    // The HTML stands alone and carries its charts.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    let charts = html.matches("<svg").count();
    assert!(charts >= 4, "{charts} charts");
    assert_eq!(charts, html.matches("</svg>").count(), "every chart is closed");
    assert!(html.matches("<rect").count() >= 20, "charts have bars");
    for needle in ["Revenue", "Guild", "Damage", "Funnel"] {
        assert!(html.contains(needle), "{needle} missing from the HTML");
    }
    for external in ["http://", "https://", "<script", "<link", "src="] {
        assert!(!html.contains(external), "the HTML must be self-contained: found {external}");
    }
}
