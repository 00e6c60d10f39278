//! The report renderer end to end: sections as the benches record them in, REPORT.md and
//! PNG charts out; a missing section is refused with the bench that records it.

use std::process::Command;

use autoglm_bench::{Chart, SECTIONS, Section, Series, Table};

fn section(key: &str) -> Section {
    let mut section = Section::new(key, &format!("Title of {key}"), "What was measured.");
    let mut table = Table::new(&["case", "p50", "ratio"]);
    table.row(vec!["baseline".into(), "1.00 µs".into(), "1.00x".into()]);
    table.row(vec!["measured".into(), "25.0 µs".into(), "25.0x".into()]);
    section.tables.push(table);
    section.notes.push(format!("{key} is 25x its baseline."));
    section.charts.push(Chart {
        file: format!("{key}.png"),
        title: format!("Chart of {key}"),
        unit: "µs".into(),
        log_scale: key == "per_call",
        groups: vec!["Rust".into(), "Python".into()],
        series: vec![
            Series { name: "baseline".into(), values: vec![1.0, 1.0] },
            Series { name: "measured".into(), values: vec![25.0, 1200.0] },
        ],
    });
    section
}

fn render(results: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoglm-bench-report"))
        .arg("--results")
        .arg(results)
        .arg("--out")
        .arg(out)
        .arg("--quick")
        .output()
        .unwrap()
}

#[test]
fn every_section_becomes_a_table_and_a_png_chart() {
    let results = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (key, _) in SECTIONS {
        let path = results.path().join(format!("{key}.json"));
        std::fs::write(path, serde_json::to_string(&section(key)).unwrap()).unwrap();
    }
    let output = render(results.path(), out.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = std::fs::read_to_string(out.path().join("REPORT.md")).unwrap();
    assert!(report.contains("`just bench --quick`") && report.contains("| cores |"), "{report}");
    for (key, _) in SECTIONS {
        assert!(report.contains(&format!("## Title of {key}")), "{key} missing");
        assert!(report.contains("| measured | 25.0 µs | 25.0x |"), "{report}");
        assert!(report.contains(&format!("- {key} is 25x its baseline.")), "{report}");
        assert!(report.contains(&format!("](charts/{key}.png)")), "{report}");
        let png = std::fs::read(out.path().join("charts").join(format!("{key}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000, "{key}.png");
    }
}

#[test]
fn a_missing_section_names_the_bench_that_records_it() {
    let results = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (key, _) in SECTIONS.iter().filter(|(key, _)| *key != "cold_start") {
        let path = results.path().join(format!("{key}.json"));
        std::fs::write(path, serde_json::to_string(&section(key)).unwrap()).unwrap();
    }
    let output = render(results.path(), out.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cold_start") && stderr.contains("--bench startup"), "{stderr}");
    assert!(!out.path().join("REPORT.md").exists(), "no partial report is written");
}
