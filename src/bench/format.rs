//! Numbers on screen: how every report (the terminal, Markdown, HTML and the figures) writes a
//! duration, a rate, a share, a ratio and an interval around any of them. The one owner of these
//! spellings, as criterion's `format.rs` is of its own.

use super::stats::Estimate;

/// `f(v)`, or `?` for a bound that could not be computed (NaN or infinite).
pub fn finite(v: f64, f: &dyn Fn(f64) -> String) -> String {
    if v.is_finite() {
        f(v)
    } else {
        "?".to_string()
    }
}

/// What the reports write where a run does not record a quantity (a foreign trainer's records).
pub const NOT_RECORDED: &str = "not recorded by this run";

/// `f(v)`, or "—" where the run does not record it.
pub fn recorded<T>(v: Option<T>, f: &dyn Fn(T) -> String) -> String {
    v.map_or_else(|| "—".to_string(), f)
}

/// A share as a percentage with one decimal, without the sign of a share that rounds to zero
/// from below (`0.0`, not `-0.0`).
pub fn share(v: f64) -> String {
    format!("{:.1}", (v * 1000.0).round() / 10.0 + 0.0)
}

/// A share as a percentage with one decimal and its unit: `62.6 %`.
pub fn percent(v: f64) -> String {
    format!("{} %", share(v))
}

/// Seconds with a sensible number of digits.
pub fn seconds(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} s")
    } else if v >= 1.0 {
        format!("{v:.2} s")
    } else {
        format!("{:.1} ms", v * 1e3)
    }
}

/// Throughput as 9.7k / 1.2M.
pub fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A ratio with three decimals and its sign: `1.806×`.
pub fn times(v: f64) -> String {
    format!("{v:.3}×")
}

/// Three decimals: an efficiency, or a ratio's bound where the unit is written once.
pub(crate) fn three(v: f64) -> String {
    format!("{v:.3}")
}

/// A relative change in percent with its sign: `+1.25%`.
pub fn change(v: f64) -> String {
    format!("{:+.2}%", v * 100.0)
}

/// How a report lays out a point and its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// criterion's `[lower point upper]`.
    Terminal,
    /// `point [lower, upper]`.
    Markdown,
    /// `point [lower – upper]`, the interval in the page's muted `ci` style.
    Html,
}

impl Layout {
    /// `point` with its interval `[lower, upper]`, each written by `f`; a bound that could not be
    /// computed is `?`.
    pub fn interval(self, lower: f64, point: f64, upper: f64, f: &dyn Fn(f64) -> String) -> String {
        let (lo, mid, hi) = (finite(lower, f), finite(point, f), finite(upper, f));
        match self {
            Layout::Terminal => format!("[{lo} {mid} {hi}]"),
            Layout::Markdown => format!("{mid} [{lo}, {hi}]"),
            Layout::Html => format!("{mid} <span class=ci>[{lo} – {hi}]</span>"),
        }
    }

    /// An estimate with its interval, each number written by `f`.
    pub(crate) fn estimate(self, e: &Estimate, f: &dyn Fn(f64) -> String) -> String {
        self.interval(e.lower, e.point, e.upper, f)
    }

    /// A ratio with its interval: `×` after every number, except in Markdown, where it follows
    /// the point alone (`1.806× [1.772, 1.841]`).
    pub(crate) fn ratio(self, e: &Estimate) -> String {
        match self {
            Layout::Markdown => markdown_ratio(e, "×", false),
            _ => self.estimate(e, &times),
        }
    }
}

/// A Markdown ratio: `point [lower, upper]` with three decimals, `unit` after the point alone,
/// and the point in bold if asked (the table's headline numbers).
pub(crate) fn markdown_ratio(e: &Estimate, unit: &str, bold: bool) -> String {
    let point = format!("{:.3}{unit}", e.point);
    let point = if bold { format!("**{point}**") } else { point };
    format!("{point} [{}, {}]", finite(e.lower, &three), finite(e.upper, &three))
}

/// A share in percent with its interval, in Markdown: `5.8 % [5.5, 6.2]`.
pub(crate) fn markdown_percent(e: &Estimate) -> String {
    format!("{} % [{}, {}]", share(e.point), finite(e.lower, &share), finite(e.upper, &share))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_to_a_tenth_of_a_percent_without_a_negative_zero() {
        assert_eq!(share(0.0376), "3.8");
        assert_eq!(share(-0.0486), "-4.9");
        assert_eq!(share(-0.0004), "0.0");
        assert_eq!(share(0.0), "0.0");
    }

    #[test]
    fn intervals_show_unknown_bounds_as_question_marks() {
        assert_eq!(
            Layout::Markdown.interval(f64::NAN, 2.0, 3.0, &|v| format!("{v:.1}")),
            "2.0 [?, 3.0]"
        );
        let e = Estimate { point: 0.98, lower: 0.961, upper: f64::INFINITY };
        assert_eq!(markdown_ratio(&e, "", true), "**0.980** [0.961, ?]");
        assert_eq!(markdown_ratio(&e, "×", false), "0.980× [0.961, ?]");
        assert_eq!(Layout::Terminal.ratio(&e), "[0.961× 0.980× ?]");
        assert_eq!(Layout::Html.ratio(&e), "0.980× <span class=ci>[0.961× – ?]</span>");
    }
}
