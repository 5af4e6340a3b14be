//! Pure statistics on samples of epoch times and throughputs: summaries, Tukey outliers,
//! Student-t intervals of a mean, Fieller intervals of a ratio of means, and the baseline verdict.
//! No I/O, no plotting (criterion's `stats/` split).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// A point estimate with the bounds of its confidence interval; unbounded bounds are NaN in
/// memory and `null` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub point: f64,
    #[serde(with = "nan_as_null")]
    pub lower: f64,
    #[serde(with = "nan_as_null")]
    pub upper: f64,
}

/// JSON has no NaN or infinity: write them as `null`, read `null` back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); 0 for fewer than two values.
pub fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Percentile `p` in [0, 100] with linear interpolation between closest ranks (as criterion and
/// numpy's default do).
pub(crate) fn percentile(x: &[f64], p: f64) -> f64 {
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
}

pub(crate) fn median(x: &[f64]) -> f64 {
    percentile(x, 50.0)
}

/// Tukey's fences: mild outliers lie beyond 1.5 IQR from the quartiles, severe beyond 3 IQR.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Outliers {
    pub low_severe: usize,
    pub low_mild: usize,
    pub high_mild: usize,
    pub high_severe: usize,
}

impl Outliers {
    pub(crate) fn classify(x: &[f64]) -> Self {
        let (q1, q3) = (percentile(x, 25.0), percentile(x, 75.0));
        let iqr = q3 - q1;
        let mut o = Outliers::default();
        for &v in x {
            if v < q1 - 3.0 * iqr {
                o.low_severe += 1;
            } else if v < q1 - 1.5 * iqr {
                o.low_mild += 1;
            } else if v > q3 + 3.0 * iqr {
                o.high_severe += 1;
            } else if v > q3 + 1.5 * iqr {
                o.high_mild += 1;
            }
        }
        o
    }

    pub fn total(&self) -> usize {
        self.low_severe + self.low_mild + self.high_mild + self.high_severe
    }
}

/// Two-sided Student-t quantile for `level` (e.g. 0.95) and `df` degrees of freedom; NaN where
/// none exists (a level outside (0, 1), fewer than one degree of freedom, NaN), so that an
/// interval that cannot be computed says so. Past [`NORMAL_DF`] degrees of freedom the normal
/// quantile (the t quantile's limit, within 1e-5 there): statrs inverts the t distribution
/// by searching, which for huge or infinite degrees of freedom does not end.
pub(crate) fn t_quantile(level: f64, df: f64) -> f64 {
    if !(level > 0.0 && level < 1.0) || df.is_nan() || df < 1.0 {
        return f64::NAN;
    }
    let p = 1.0 - (1.0 - level) / 2.0;
    if df > NORMAL_DF {
        return Normal::new(0.0, 1.0).map_or(f64::NAN, |n| n.inverse_cdf(p));
    }
    StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |t| t.inverse_cdf(p))
}

/// Degrees of freedom past which [`t_quantile`] is the normal quantile.
const NORMAL_DF: f64 = 1e5;

/// Whether every value is finite: the statistics below give `None` or NaN bounds otherwise,
/// never a loop or a panic (the readers refuse such records first).
fn finite(x: &[f64]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// Descriptive statistics of one sample and the t interval of its mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    pub std_dev: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub outliers: Outliers,
}

impl Summary {
    /// Needs at least two values for an interval; with one, the interval is the point.
    pub fn of(x: &[f64], level: f64) -> Self {
        assert!(!x.is_empty(), "a summary needs at least one value");
        let m = mean(x);
        let sd = std_dev(x);
        let half = if x.len() > 1 {
            t_quantile(level, (x.len() - 1) as f64) * sd / (x.len() as f64).sqrt()
        } else {
            0.0
        };
        Summary {
            mean: m,
            lower: m - half,
            upper: m + half,
            std_dev: sd,
            median: median(x),
            min: x.iter().copied().fold(f64::INFINITY, f64::min),
            max: x.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            outliers: Outliers::classify(x),
        }
    }
}

/// Fieller's interval for the ratio of the means of two independent samples, mean(num) /
/// mean(den), with Welch–Satterthwaite degrees of freedom. `None` when the denominator's mean is
/// not significantly different from zero (the interval is then unbounded).
pub(crate) fn ratio_of_means(num: &[f64], den: &[f64], level: f64) -> Option<Estimate> {
    if num.is_empty() || den.is_empty() || !finite(num) || !finite(den) {
        return None;
    }
    let (a, b) = (mean(num), mean(den));
    if b == 0.0 {
        return None;
    }
    let (n1, n2) = (num.len() as f64, den.len() as f64);
    let v11 = std_dev(num).powi(2) / n1; // variance of mean(num)
    let v22 = std_dev(den).powi(2) / n2; // variance of mean(den)
    let r = a / b;
    if v11 + v22 == 0.0 {
        return Some(Estimate { point: r, lower: r, upper: r });
    }
    // Degrees of freedom of a − r·b (Welch–Satterthwaite); a sample of one contributes none.
    let part = |v: f64, n: f64| if n > 1.0 { v * v / (n - 1.0) } else { 0.0 };
    let df_den = part(v11, n1) + part(r * r * v22, n2);
    let df = if df_den > 0.0 { (v11 + r * r * v22).powi(2) / df_den } else { f64::INFINITY };
    let t = t_quantile(level, df.max(1.0));
    let g = t * t * v22 / (b * b);
    if g.is_nan() || g >= 1.0 {
        return None; // not computable (a NaN quantile), or unbounded
    }
    let half = (t / b.abs()) * (v11 + r * r * v22 - g * v11).max(0.0).sqrt();
    let (lo, hi) = ((r - half) / (1.0 - g), (r + half) / (1.0 - g));
    Some(Estimate { point: r, lower: lo.min(hi), upper: lo.max(hi) })
}

/// The ratio of two configurations measured in pairs (epoch `j` of each, run in turn): the
/// geometric mean of the per-pair ratios `num[j] / den[j]`, with a Student-t interval on their
/// logarithms (n − 1 degrees of freedom). Pairing takes out what the pairs share, such as the
/// machine's drift in speed over minutes, which independent samples leave in the interval.
/// `None` with fewer than two pairs or a value that is not positive.
pub(crate) fn paired_ratio(num: &[f64], den: &[f64], level: f64) -> Option<Estimate> {
    let positive = |v: &f64| v.is_finite() && *v > 0.0;
    if num.len() != den.len() || num.len() < 2 || !num.iter().chain(den).all(positive) {
        return None;
    }
    let logs: Vec<f64> = num.iter().zip(den).map(|(a, b)| (a / b).ln()).collect();
    let (m, n) = (mean(&logs), logs.len() as f64);
    let half = t_quantile(level, n - 1.0) * std_dev(&logs) / n.sqrt();
    Some(Estimate { point: m.exp(), lower: (m - half).exp(), upper: (m + half).exp() })
}

/// `ratio_of_means`, or the point ratio with unbounded (NaN) bounds where Fieller's interval is
/// unbounded.
pub(crate) fn ratio_estimate(num: &[f64], den: &[f64], level: f64) -> Estimate {
    ratio_of_means(num, den, level).unwrap_or(Estimate {
        point: mean(num) / mean(den),
        lower: f64::NAN,
        upper: f64::NAN,
    })
}

/// Welch's two-sided t-test p-value for a difference between the means of two samples; NaN
/// where it cannot be computed (an empty sample, a value that is not finite).
pub(crate) fn welch_p_value(x: &[f64], y: &[f64]) -> f64 {
    if x.is_empty() || y.is_empty() || !finite(x) || !finite(y) {
        return f64::NAN;
    }
    let (vx, vy) = (std_dev(x).powi(2) / x.len() as f64, std_dev(y).powi(2) / y.len() as f64);
    if vx + vy == 0.0 {
        return if mean(x) == mean(y) { 1.0 } else { 0.0 };
    }
    let t = (mean(x) - mean(y)) / (vx + vy).sqrt();
    let df = (vx + vy).powi(2)
        / (vx * vx / (x.len() - 1).max(1) as f64 + vy * vy / (y.len() - 1).max(1) as f64);
    match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) if df.is_finite() => 2.0 * (1.0 - dist.cdf(t.abs())),
        _ => f64::NAN,
    }
}

/// Criterion's verdict on a change against a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    /// Significant, but smaller than the noise threshold.
    WithinNoise,
    /// Not significant.
    NoChange,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Improved => "Performance has improved.",
            Verdict::Regressed => "Performance has regressed.",
            Verdict::WithinNoise => "Change within noise threshold.",
            Verdict::NoChange => "No change in performance detected.",
        })
    }
}

/// Thresholds of the baseline comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// p-value below which a change is significant.
    pub significance: f64,
    /// Relative change below which a significant change is still called noise.
    pub noise: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        // criterion's defaults are 0.05 and 0.01; whole training epochs on a shared machine vary
        // more than a micro-benchmark, so the noise threshold is 2%.
        Thresholds { significance: 0.05, noise: 0.02 }
    }
}

/// A relative change of the mean, `new / old − 1`, with its interval, p-value and verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub relative: Estimate,
    pub p_value: f64,
    pub verdict: Verdict,
}

/// Compares a new sample with a baseline sample of the same quantity; `lower_is_better` for
/// times, not for throughputs.
pub fn compare(
    new: &[f64],
    old: &[f64],
    level: f64,
    thresholds: Thresholds,
    lower_is_better: bool,
) -> Change {
    let ratio = ratio_estimate(new, old, level);
    let relative =
        Estimate { point: ratio.point - 1.0, lower: ratio.lower - 1.0, upper: ratio.upper - 1.0 };
    let p_value = welch_p_value(new, old);
    let verdict = if p_value.is_nan() || p_value >= thresholds.significance {
        Verdict::NoChange // not computable, or not significant
    } else if relative.point.abs() < thresholds.noise {
        Verdict::WithinNoise
    } else if (relative.point < 0.0) == lower_is_better {
        Verdict::Improved
    } else {
        Verdict::Regressed
    };
    Change { relative, p_value, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn paired_ratio_by_hand() {
        // Ratios 2·e^{-0.1}, 2·e^{0.1}, 2: logs ln 2 + (−0.1, 0.1, 0), mean ln 2, s = 0.1,
        // t(0.975, 2) = 4.302653, half width 4.302653 · 0.1 / √3 = 0.248414.
        let den = [10.0, 20.0, 40.0];
        let num = [20.0 * (-0.1f64).exp(), 40.0 * 0.1f64.exp(), 80.0];
        let e = paired_ratio(&num, &den, 0.95).unwrap();
        assert!(close(e.point, 2.0, 1e-12), "{e:?}");
        assert!(close(e.lower, 2.0 * (-0.248414f64).exp(), 1e-5), "{e:?}");
        assert!(close(e.upper, 2.0 * 0.248414f64.exp(), 1e-5), "{e:?}");
        // A drift the pairs share leaves no trace: the denominators vary by 60 %, the ratio not
        // at all, where Fieller's interval on the same numbers is wide.
        let (den, num) = ([1.0, 1.3, 1.6, 1.2], [2.0, 2.6, 3.2, 2.4]);
        let flat = paired_ratio(&num, &den, 0.95).unwrap();
        assert!(close(flat.lower, 2.0, 1e-12) && close(flat.upper, 2.0, 1e-12), "{flat:?}");
        let fieller = ratio_estimate(&num, &den, 0.95);
        assert!(fieller.upper - fieller.lower > 0.5, "{fieller:?}");
        // Too few pairs, unequal lengths, or a non-positive value: no estimate.
        assert!(paired_ratio(&[2.0], &[1.0], 0.95).is_none());
        assert!(paired_ratio(&[2.0, 3.0], &[1.0], 0.95).is_none());
        assert!(paired_ratio(&[2.0, 0.0], &[1.0, 1.0], 0.95).is_none());
    }

    #[test]
    fn t_interval_by_hand() {
        // x = 1..5: mean 3, s = √2.5 = 1.5811, t(0.975, 4) = 2.776445,
        // half width = 2.776445 · 1.5811 / √5 = 1.963243.
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95);
        assert!(close(s.mean, 3.0, 1e-12));
        assert!(close(s.std_dev, 2.5f64.sqrt(), 1e-12));
        assert!(close(s.lower, 3.0 - 1.963243, 1e-5), "{s:?}");
        assert!(close(s.upper, 3.0 + 1.963243, 1e-5));
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        // n = 2: t(0.975, 1) = 12.7062; x = {10, 12}: s = √2, half = 12.7062 · √2 / √2.
        let s = Summary::of(&[10.0, 12.0], 0.95);
        assert!(close(s.upper - s.mean, 12.706205, 1e-5), "{s:?}");
        // A 90% interval is narrower: t(0.95, 4) = 2.131847.
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.90);
        assert!(close(s.upper - 3.0, 2.131847 * 2.5f64.sqrt() / 5f64.sqrt(), 1e-5));
    }

    #[test]
    fn tukey_fences_by_hand() {
        // Quartiles of 1..=8 (linear): q1 = 2.75, q3 = 6.25, IQR 3.5. Mild fences −2.5 / 11.5,
        // severe −7.75 / 16.75.
        let mut x: Vec<f64> = (1..=8).map(f64::from).collect();
        assert_eq!(Outliers::classify(&x).total(), 0);
        x.extend([12.0, 20.0, -3.0]);
        // With the extra points the quartiles move; recompute by hand: sorted
        // [-3, 1, 2, 3, 4, 5, 6, 7, 8, 12, 20]: q1 = 2.5, q3 = 7.5, IQR 5; mild (−5, 15),
        // severe (−12.5, 22.5): only 20 is a (mild) outlier.
        let o = Outliers::classify(&x);
        assert_eq!(o, Outliers { high_mild: 1, ..Default::default() });
        x.push(100.0);
        assert_eq!(Outliers::classify(&x).high_severe, 1);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 25.0), 1.75);
    }

    #[test]
    fn fieller_by_hand() {
        // num = {9, 10, 11}: mean 10, var of mean 1/3; den = {4, 5, 6}: mean 5, var of mean 1/3.
        // r = 2; Welch df = (1/3 + 4/3)² / ((1/3)²/2 + (4/3)²/2) = 2.941176;
        // t(0.975, 2.941176) = 3.218759 (numerical integration of the t density);
        // g = t² (1/3) / 25 = 0.138139; half = (t/5) √(1/3 + 4/3 − g/3) = 0.819519;
        // interval = (2 ∓ half) / (1 − g) = [1.369688, 3.271430].
        let e = ratio_of_means(&[9.0, 10.0, 11.0], &[4.0, 5.0, 6.0], 0.95).unwrap();
        assert!(close(e.point, 2.0, 1e-12));
        assert!(close(t_quantile(0.95, 2.941176470588236), 3.218759, 1e-5));
        assert!(close(e.lower, 1.369688, 1e-5) && close(e.upper, 3.271430, 1e-5), "{e:?}");
        // A denominator indistinguishable from zero has no bounded interval.
        assert!(ratio_of_means(&[1.0, 2.0], &[-1.0, 1.2], 0.95).is_none());
        // No noise: the interval collapses to the point.
        let e = ratio_of_means(&[4.0, 4.0], &[2.0, 2.0], 0.95).unwrap();
        assert_eq!((e.lower, e.upper), (2.0, 2.0));
    }

    #[test]
    fn verdicts() {
        let old = [10.0, 10.01, 9.99, 10.005, 9.995];
        let faster = [8.0, 8.1, 7.9, 8.05, 7.95];
        let same = [10.002, 9.998, 10.01, 9.99, 10.0];
        let t = Thresholds::default();
        assert_eq!(compare(&faster, &old, 0.95, t, true).verdict, Verdict::Improved);
        assert_eq!(compare(&faster, &old, 0.95, t, false).verdict, Verdict::Regressed);
        assert_eq!(compare(&same, &old, 0.95, t, true).verdict, Verdict::NoChange);
        let slightly = [10.1, 10.11, 10.09, 10.105, 10.095];
        let c = compare(&slightly, &old, 0.95, t, true);
        assert!(c.p_value < 0.05, "{c:?}");
        assert_eq!(c.verdict, Verdict::WithinNoise);
        let c = compare(&faster, &old, 0.95, t, true);
        assert!(
            close(c.relative.point, -0.2, 1e-12)
                && c.relative.lower < -0.2
                && c.relative.upper > -0.2
        );
    }

    /// Degenerate samples give `None`, NaN bounds or a point interval, never a loop or a panic:
    /// each shape runs on its own thread, and all must end within seconds.
    #[test]
    fn degenerate_samples_end_quickly_without_an_interval() {
        let shapes: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
            ("zeros", vec![0.0, 0.0, 0.0], vec![0.0, 0.0, 0.0]),
            ("zero denominator", vec![1.0, 2.0, 3.0], vec![0.0, 0.0, 0.0]),
            ("zero variance", vec![2.0, 2.0], vec![1.0, 1.0]),
            ("one value", vec![2.0], vec![1.0]),
            ("one value against many", vec![2.0], vec![1.0, 1.1, 0.9]),
            ("NaN", vec![1.0, f64::NAN], vec![1.0, 2.0]),
            ("infinity", vec![1.0, f64::INFINITY], vec![1.0, 2.0]),
            ("empty", vec![], vec![1.0, 2.0]),
            ("tiny denominator", vec![1.0, 2.0], vec![1e-300, 2e-300]),
            ("huge", vec![1e300, 1.1e300], vec![1.0, 1.2]),
        ];
        let (done, finished) = std::sync::mpsc::channel();
        for (name, num, den) in shapes.clone() {
            let done = done.clone();
            std::thread::spawn(move || {
                let fieller = ratio_of_means(&num, &den, 0.95);
                let paired = paired_ratio(&num, &den, 0.95);
                let change = compare(&num, &den, 0.95, Thresholds::default(), true);
                let summary = (!num.is_empty()).then(|| Summary::of(&num, 0.95));
                done.send((name, fieller, paired, change, summary)).unwrap();
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        for _ in &shapes {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (name, fieller, paired, change, _) =
                finished.recv_timeout(left).expect("a degenerate sample's statistics never ended");
            if ["zero denominator", "zeros", "NaN", "infinity", "empty"].contains(&name) {
                assert_eq!(fieller, None, "{name}");
                assert_eq!(paired, None, "{name}");
            }
            if name == "zero variance" {
                assert_eq!(fieller.map(|e| (e.lower, e.upper)), Some((2.0, 2.0)));
            }
            if ["NaN", "infinity", "empty"].contains(&name) {
                assert!(change.p_value.is_nan() && change.verdict == Verdict::NoChange, "{name}");
            }
        }
        assert!(t_quantile(0.95, f64::INFINITY) > 1.95 && t_quantile(0.95, 1e12) < 1.97);
        assert!(t_quantile(0.95, 0.5).is_nan() && t_quantile(1.5, 3.0).is_nan());
        assert!((t_quantile(0.95, 4.0) - 2.776).abs() < 1e-3);
    }
}
