//! What `benches/allreduce.rs` concludes, from the samples criterion saved: per parameter list,
//! the flat all-reduce's bandwidth as a share of a bare `MPI_Allreduce` of one buffer of the same
//! size, and its speedup over one call per parameter, each with a Fieller interval.

use super::stats::{self, Estimate};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One parameter list's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllReduceSummary {
    pub preset: String,
    pub bytes: u64,
    /// Mean seconds per all-reduce of each variant.
    pub bare_s: f64,
    pub flat_s: f64,
    pub per_param_s: f64,
    /// bare time ÷ flat time: the flat all-reduce's bandwidth as a share of bare MPI's.
    pub flat_share_of_bare: Estimate,
    /// per-parameter time ÷ flat time.
    pub flat_speedup_over_per_param: Estimate,
}

/// criterion's `new/sample.json`: the iterations and total nanoseconds of each sample.
#[derive(Deserialize)]
struct Sample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// Seconds per iteration of each sample of `group/variant/preset`.
fn per_iteration(group: &Path, variant: &str, preset: &str) -> anyhow::Result<Vec<f64>> {
    let path = group.join(variant).join(preset).join("new/sample.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let s: Sample = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    anyhow::ensure!(
        !s.iters.is_empty() && s.iters.len() == s.times.len(),
        "{}: no samples",
        path.display()
    );
    Ok(s.iters.iter().zip(&s.times).map(|(i, t)| t / i / 1e9).collect())
}

/// The verdict for each of `presets` (name, bytes) from the criterion group directory `group`.
pub fn summarise(
    group: &Path,
    presets: &[(&str, u64)],
    level: f64,
) -> anyhow::Result<Vec<AllReduceSummary>> {
    presets
        .iter()
        .map(|&(preset, bytes)| {
            let bare = per_iteration(group, "bare", preset)?;
            let flat = per_iteration(group, "flat", preset)?;
            let per_param = per_iteration(group, "per_param", preset)?;
            Ok(AllReduceSummary {
                preset: preset.to_string(),
                bytes,
                bare_s: stats::mean(&bare),
                flat_s: stats::mean(&flat),
                per_param_s: stats::mean(&per_param),
                flat_share_of_bare: stats::ratio_estimate(&bare, &flat, level),
                flat_speedup_over_per_param: stats::ratio_estimate(&per_param, &flat, level),
            })
        })
        .collect()
}

/// One line per parameter list, as criterion prints a benchmark.
pub fn render(s: &AllReduceSummary) -> String {
    let (a, b) = (&s.flat_share_of_bare, &s.flat_speedup_over_per_param);
    format!(
        "allreduce/{:<6} {:>7.1} MB  flat vs bare MPI: [{:.0} % {:.0} % {:.0} %]  flat vs per-parameter: [{:.2}× {:.2}× {:.2}×]",
        s.preset,
        s.bytes as f64 / 1e6,
        a.lower * 100.0,
        a.point * 100.0,
        a.upper * 100.0,
        b.lower,
        b.point,
        b.upper
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(group: &Path, variant: &str, ms_per_iter: &[f64]) {
        let dir = group.join(variant).join("p").join("new");
        std::fs::create_dir_all(&dir).unwrap();
        let iters: Vec<f64> = (1..=ms_per_iter.len()).map(|i| (2 * i) as f64).collect();
        let times: Vec<f64> = iters.iter().zip(ms_per_iter).map(|(i, m)| i * m * 1e6).collect();
        let json = serde_json::json!({"sampling_mode": "Linear", "iters": iters, "times": times});
        std::fs::write(dir.join("sample.json"), json.to_string()).unwrap();
    }

    #[test]
    fn ratios_come_from_per_iteration_times() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bare", &[10.0, 11.0, 9.0, 10.0]);
        write(dir.path(), "flat", &[5.0, 5.5, 4.5, 5.0]);
        write(dir.path(), "per_param", &[20.0, 21.0, 19.0, 20.0]);
        let s = &summarise(dir.path(), &[("p", 1000)], 0.95).unwrap()[0];
        assert!((s.flat_s - 0.005).abs() < 1e-12, "{}", s.flat_s);
        assert!((s.flat_share_of_bare.point - 2.0).abs() < 1e-9);
        assert!((s.flat_speedup_over_per_param.point - 4.0).abs() < 1e-9);
        let b = &s.flat_speedup_over_per_param;
        assert!(b.lower < 4.0 && 4.0 < b.upper, "{b:?}");
        assert!(render(s).contains("[") && render(s).contains("4.00×"));
        // A variant without samples is an error naming the file, not a silent gap.
        let err = summarise(dir.path(), &[("q", 1)], 0.95).unwrap_err();
        assert!(format!("{err:#}").contains("q/new/sample.json"), "{err:#}");
    }
}
