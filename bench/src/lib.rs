//! Benchmark results as sections of the report: each bench binary records the sections it
//! measured (tables, notes and chart data) as JSON under `$AUTOGLM_BENCH_OUT`, and
//! `autoglm-bench-report` renders them into `bench/REPORT.md` with PNG charts.

#![deny(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The report's sections in the order they appear; the report refuses to render without
/// every one of them, so a bench that silently stopped recording cannot go unnoticed.
pub const SECTIONS: &[(&str, &str)] = &[
    ("per_call", "sandbox_call"),
    ("seed_scenario", "agent"),
    ("http", "http_throughput"),
    ("cold_start", "startup"),
    ("memory", "startup"),
    ("engine", "engine"),
    ("batching", "agent"),
    ("tasks", "tasks"),
];

/// One section of the report: what was measured, against which baseline, and the figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Section {
    /// Stable key (one of [`SECTIONS`]); also the JSON file's name.
    pub key: String,
    /// Heading.
    pub title: String,
    /// What is measured and how, in a sentence or two.
    pub intro: String,
    /// The figures.
    pub tables: Vec<Table>,
    /// Conclusions drawn from the figures (each a bullet).
    pub notes: Vec<String>,
    /// Charts of the figures.
    pub charts: Vec<Chart>,
}

/// A table of already-formatted cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
}

/// A grouped bar chart: one group per label, one bar per series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chart {
    /// File name under `bench/charts/` (PNG).
    pub file: String,
    /// Title drawn above the bars.
    pub title: String,
    /// Label of the value axis, with its unit.
    pub unit: String,
    /// Draw the value axis on a log scale (for figures that span orders of magnitude).
    pub log_scale: bool,
    /// Group labels along the category axis.
    pub groups: Vec<String>,
    /// One value per group for each series.
    pub series: Vec<Series>,
}

/// One series of a chart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// One value per group.
    pub values: Vec<f64>,
}

impl Section {
    /// An empty section.
    pub fn new(key: &str, title: &str, intro: &str) -> Self {
        Self {
            key: key.into(),
            title: title.into(),
            intro: intro.into(),
            tables: Vec::new(),
            notes: Vec::new(),
            charts: Vec::new(),
        }
    }

    /// Write the section to `$AUTOGLM_BENCH_OUT/<key>.json` when that variable is set (as
    /// `just bench` sets it); a bench run by hand only prints.
    pub fn record(&self) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os("AUTOGLM_BENCH_OUT").map(PathBuf::from) else {
            return Ok(());
        };
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", self.key));
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }
}

impl Series {
    /// Empty series with these names, filled one group at a time.
    pub fn named(names: &[&str]) -> Vec<Series> {
        names.iter().map(|n| Series { name: n.to_string(), values: Vec::new() }).collect()
    }
}

impl Table {
    /// A table with these column headings.
    pub fn new(columns: &[&str]) -> Self {
        Self { columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    /// Append a row.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    /// The table as aligned plain text, for the terminal.
    pub fn text(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                let cells = self.rows.iter().map(|r| r[i].chars().count());
                cells.chain([self.columns[i].chars().count()]).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(c, w)| format!("{c:>w$}")).collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        std::iter::once(line(&self.columns)).chain(self.rows.iter().map(|r| line(r))).collect()
    }
}

/// Minor page faults of this process so far (Linux `/proc/self/stat`; 0 elsewhere).
pub fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis,
    // where the third field (state) comes first and the tenth (minflt) eighth.
    let fields = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    fields.split_whitespace().nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// A goal's verdict in a report table: `met` or `missed`.
pub fn verdict(met: bool) -> String {
    if met { "met" } else { "missed" }.to_string()
}

/// Whether the bench runs in quick mode (`--quick` or `AUTOGLM_BENCH_QUICK`).
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick") || std::env::var_os("AUTOGLM_BENCH_QUICK").is_some()
}

/// A duration with a unit that suits it (ns, µs, ms or s), three significant digits.
pub fn duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    let (value, unit) = match ns {
        n if n < 1e3 => (n, "ns"),
        n if n < 1e6 => (n / 1e3, "µs"),
        n if n < 1e9 => (n / 1e6, "ms"),
        n => (n / 1e9, "s"),
    };
    format!("{} {unit}", significant(value))
}

/// `value / baseline` as "12.3x" (three significant digits).
pub fn ratio(value: f64, baseline: f64) -> String {
    format!("{}x", significant(value / baseline))
}

/// A number with three significant digits (no exponent).
pub fn significant(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let decimals = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    };
    format!("{value:.decimals$}")
}

/// The median and 99th percentile of `samples`.
pub fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ratios_read_naturally() {
        assert_eq!(duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(duration(Duration::from_nanos(12_340)), "12.3 µs");
        assert_eq!(duration(Duration::from_micros(4_560)), "4.56 ms");
        assert_eq!(duration(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(ratio(30.0, 2.0), "15.0x");
        assert_eq!(ratio(1.0, 3.0), "0.333x");
    }

    #[test]
    fn percentiles_pick_the_median_and_the_tail() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99) = percentiles(samples);
        assert_eq!((p50, p99), (Duration::from_millis(51), Duration::from_millis(99)));
    }

    #[test]
    fn text_tables_align_columns() {
        let mut table = Table::new(&["case", "p50"]);
        table.row(vec!["native".into(), "1 µs".into()]);
        table.row(vec!["sandbox".into(), "12.5 µs".into()]);
        assert_eq!(table.text(), "   case      p50\n native     1 µs\nsandbox  12.5 µs\n");
    }
}
