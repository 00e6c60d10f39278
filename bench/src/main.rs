//! `autoglm-bench-report`: renders the sections the benches recorded (see `just bench`) into
//! `bench/REPORT.md` with one PNG per chart, headed by the machine and the commit measured.

mod chart;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use autoglm_bench::{SECTIONS, Section, Table};
use clap::Parser;

/// Render the benchmark report.
#[derive(Parser)]
struct Args {
    /// Where the benches recorded their sections (their `AUTOGLM_BENCH_OUT`).
    #[arg(long, default_value = "target/bench")]
    results: PathBuf,
    /// Where to write REPORT.md and charts/.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// The benches ran in quick mode (the report says so).
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sections = SECTIONS
        .iter()
        .map(|(key, bench)| load(&args.results, key, bench))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let charts = args.out.join("charts");
    // Charts of an earlier run that this one no longer draws would linger in the commit.
    if charts.exists() {
        std::fs::remove_dir_all(&charts)
            .with_context(|| format!("clearing {}", charts.display()))?;
    }
    std::fs::create_dir_all(&charts).with_context(|| format!("creating {}", charts.display()))?;

    let mut report = header(args.quick);
    for section in &sections {
        for chart in &section.charts {
            chart::draw(chart, &charts.join(&chart.file))?;
        }
        report.push_str(&render(section));
    }
    let path = args.out.join("REPORT.md");
    let partial = args.out.join("REPORT.md.partial");
    std::fs::write(&partial, report).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    let drawn: usize = sections.iter().map(|s| s.charts.len()).sum();
    println!("wrote {} ({} sections, {drawn} charts)", path.display(), sections.len());
    Ok(())
}

/// The section `key` that `bench` recorded.
fn load(dir: &Path, key: &str, bench: &str) -> anyhow::Result<Section> {
    let path = dir.join(format!("{key}.json"));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no results for section {key} ({}): run `just bench`, or \
             `AUTOGLM_BENCH_OUT={} cargo bench -p autoglm-host --bench {bench}`",
            path.display(),
            dir.display()
        )
    })?;
    let section: Section = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a section", path.display()))?;
    anyhow::ensure!(
        !section.tables.is_empty() && section.tables.iter().all(|t| !t.rows.is_empty()),
        "section {key} in {} has no figures; rerun `cargo bench --bench {bench}`",
        path.display()
    );
    Ok(section)
}

/// Title, when, which commit, which machine.
fn header(quick: bool) -> String {
    let mode = if quick { "`just bench --quick`" } else { "`just bench`" };
    let mut out = String::from("# Benchmark report\n\n");
    let _ = writeln!(
        out,
        "Written by {mode} on {} from commit {}. Every figure stands next to a baseline \
         measured in the same run on the same machine; compare the ratios across machines, \
         not the absolute times (these machines are shared and noisy).\n",
        now_utc(),
        commit()
    );
    let mut machine = Table::new(&["machine", ""]);
    machine.row(vec!["CPU".into(), cpu_model()]);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    machine.row(vec!["cores".into(), cores.to_string()]);
    machine.row(vec!["memory".into(), memory()]);
    machine.row(vec!["kernel".into(), read_trimmed("/proc/sys/kernel/osrelease")]);
    machine.row(vec!["rustc".into(), output("rustc", &["--version"])]);
    out.push_str(&markdown(&machine));
    out.push_str("\nSections: ");
    let links: Vec<String> = SECTIONS.iter().map(|(key, _)| format!("[{key}](#{key})")).collect();
    out.push_str(&links.join(" · "));
    out.push_str("\n\n");
    out
}

fn render(section: &Section) -> String {
    let mut out =
        format!("<a id=\"{}\"></a>\n## {}\n\n{}\n\n", section.key, section.title, section.intro);
    for table in &section.tables {
        out.push_str(&markdown(table));
        out.push('\n');
    }
    for note in &section.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !section.notes.is_empty() {
        out.push('\n');
    }
    for chart in &section.charts {
        let _ = writeln!(out, "![{}](charts/{})\n", chart.title, chart.file);
    }
    out
}

fn markdown(table: &Table) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(&table.columns);
    let rule: Vec<String> =
        (0..table.columns.len()).map(|i| if i == 0 { "---" } else { "---:" }.into()).collect();
    out.push_str(&line(&rule));
    for row in &table.rows {
        out.push_str(&line(row));
    }
    out
}

fn commit() -> String {
    let hash = output("git", &["rev-parse", "--short=12", "HEAD"]);
    // The report and its charts are rewritten by this run; other changes make it a
    // measurement of uncommitted code.
    let dirty = output(
        "git",
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!bench/REPORT.md",
            ":!bench/charts",
        ],
    );
    if dirty.is_empty() || dirty == "unknown" {
        format!("`{hash}`")
    } else {
        format!("`{hash}` with uncommitted changes")
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, name)| name.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn memory() -> String {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown".into())
}

/// The current time as `YYYY-MM-DD HH:MM UTC` (civil-from-days, proleptic Gregorian).
fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}
