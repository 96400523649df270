//! What a benchmark run produces: rows of (figure, Shoal, baseline, ratio), printed as a table
//! and written as JSON.

use serde::{Deserialize, Serialize};

/// Several measurements of one figure: the median and the spread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Sample {
    /// The median and spread of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        assert!(!values.is_empty(), "a sample needs a measurement");
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
            runs: v.len(),
        }
    }
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// A goal for a figure and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub goal: String,
    pub met: bool,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub figure: String,
    pub unit: String,
    pub better: Better,
    pub shoal: Sample,
    /// What the baseline is (`"tokio mpsc"`, `"ideal 1/(N+1)"`, ...); empty without one.
    pub baseline_name: String,
    pub baseline: Option<Sample>,
    /// Shoal's median divided by the baseline's.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
}

impl Row {
    pub fn new(scenario: &str, figure: &str, unit: &str, better: Better, shoal: Sample) -> Self {
        Self {
            scenario: scenario.into(),
            figure: figure.into(),
            unit: unit.into(),
            better,
            shoal,
            baseline_name: String::new(),
            baseline: None,
            ratio: None,
            target: None,
        }
    }

    /// Compares with `baseline` measured in the same run.
    pub fn against(mut self, name: &str, baseline: Sample) -> Self {
        self.ratio = (baseline.median != 0.0).then(|| self.shoal.median / baseline.median);
        self.baseline_name = name.into();
        self.baseline = Some(baseline);
        self
    }

    /// Records a goal and whether it was met.
    pub fn target(mut self, goal: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target {
            goal: goal.into(),
            met,
        });
        self
    }
}

/// The whole run, as written to `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub quick: bool,
    pub machine: Machine,
    pub started_unix_s: u64,
    pub wall_secs: f64,
    pub rows: Vec<Row>,
    /// Scenarios that could not run, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Where the run happened.
#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: String,
    pub arch: String,
}

impl Machine {
    pub fn this() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        }
    }
}

impl Report {
    /// Why this report is not sane, if it is not: a scenario failed or produced no row, or a
    /// figure is not a finite, non-negative number.
    pub fn problems(&self, expected: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = self
            .failed
            .iter()
            .map(|(name, why)| format!("scenario {name} failed: {why}"))
            .collect();
        for name in expected {
            if !self.rows.iter().any(|r| r.scenario == *name) {
                out.push(format!("scenario {name} produced no figure"));
            }
        }
        for r in &self.rows {
            let mut values = vec![r.shoal.median, r.shoal.min, r.shoal.max];
            values.extend(r.baseline.iter().flat_map(|b| [b.median, b.min, b.max]));
            values.extend(r.ratio);
            if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                out.push(format!(
                    "{} / {}: a value is not a finite, non-negative number",
                    r.scenario, r.figure
                ));
            }
            if r.shoal.runs == 0 || r.shoal.min > r.shoal.median || r.shoal.median > r.shoal.max {
                out.push(format!(
                    "{} / {}: the sample's median is outside its spread",
                    r.scenario, r.figure
                ));
            }
        }
        out
    }
}

/// A number in a table cell: three significant digits, thousands grouped.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: &Sample) -> String {
    if s.runs > 1 && s.max > s.min {
        format!("{} ({}–{})", num(s.median), num(s.min), num(s.max))
    } else {
        num(s.median)
    }
}

/// The table, as Markdown (readable in a terminal and pasteable into the docs).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | figure | Shoal | baseline | ratio | target |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let baseline = match &r.baseline {
            Some(b) => format!("{}: {}", r.baseline_name, cell(b)),
            None if !r.baseline_name.is_empty() => r.baseline_name.clone(),
            None => "—".into(),
        };
        let ratio = r.ratio.map_or("—".into(), |x| format!("{x:.2}"));
        let target = r.target.as_ref().map_or("—".into(), |t| {
            format!("{} {}", if t.met { "met:" } else { "missed:" }, t.goal)
        });
        out.push_str(&format!(
            "| {} | {} ({}) | {} | {} | {} | {} |\n",
            r.scenario,
            r.figure,
            r.unit,
            cell(&r.shoal),
            baseline,
            ratio,
            target
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_has_its_median_and_spread() {
        let s = Sample::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
    }

    #[test]
    fn ratios_divide_shoal_by_the_baseline() {
        let r = Row::new("x", "y", "1/s", Better::Higher, Sample::of(&[50.0]))
            .against("floor", Sample::of(&[100.0]));
        assert_eq!(r.ratio, Some(0.5));
        assert!(table(&[r]).contains("| 0.50 |"));
    }

    #[test]
    fn a_report_with_a_bad_value_or_a_missing_scenario_is_not_sane() {
        let good = Row::new("a", "f", "1/s", Better::Higher, Sample::of(&[1.0, 2.0]));
        let mut report = Report {
            quick: true,
            machine: Machine::this(),
            started_unix_s: 0,
            wall_secs: 1.0,
            rows: vec![good],
            failed: Vec::new(),
        };
        assert!(report.problems(&["a"]).is_empty());
        assert_eq!(report.problems(&["a", "b"]).len(), 1);
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert!(back.problems(&["a"]).is_empty());
        report.rows.push(Row::new(
            "a",
            "g",
            "s",
            Better::Lower,
            Sample::of(&[f64::NAN]),
        ));
        assert_eq!(report.problems(&["a"]).len(), 1);
    }

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.01234), "0.012");
    }
}
