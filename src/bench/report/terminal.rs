//! Criterion-style terminal lines: one block per configuration with the interval of the mean
//! epoch time and throughput, then speedup and baseline verdicts.

use crate::bench::format::{self, Layout::Terminal};
use crate::bench::stats::{Change, Estimate};
use crate::bench::summary::{BaselineChange, SpeedupSummary, Summary};

const GROUP: &str = "data_parallel";

fn percent(c: &Change) -> String {
    Terminal.estimate(&c.relative, &format::change)
}

/// The whole terminal report.
pub fn render(summary: &Summary, changes: &[BaselineChange], baseline: Option<&str>) -> String {
    let width = summary.configs.iter().map(|c| c.id.len()).max().unwrap_or(0) + GROUP.len() + 1;
    let pad = " ".repeat(width + 2);
    let mut out = String::new();
    for c in &summary.configs {
        let t = &c.training_time.stats;
        let r = &c.tokens_per_sec;
        out += &format!(
            "{:<width$}  time:   {}  thrpt: {} tok/s\n",
            format!("{GROUP}/{}", c.id),
            Terminal.interval(t.lower, t.mean, t.upper, &format::seconds),
            Terminal.interval(r.lower, r.mean, r.upper, &format::rate),
        );
        let o = &t.outliers;
        let rate = c.flops_per_rank_per_sec().map_or(String::new(), |r| {
            let mfu = c.mfu.map_or(String::new(), |m| format!(" (MFU {})", format::percent(m)));
            format!(", matrix products {:.1} GFLOP/s a rank{mfu}", r / 1e9)
        });
        let rate = match c.peak_device_mb {
            Some(mb) => format!("{rate}, peak GPU memory {mb:.0} MiB a rank"),
            None => rate,
        };
        let allreduce = match c.allreduce_share {
            Some(s) => format!("all-reduce {:.1}% of the epoch", s * 100.0),
            None => format!("all-reduce time {}", format::NOT_RECORDED),
        };
        let warm = &c.samples.warmup_epochs;
        let resumed = match warm.len() > summary.warmup_epochs {
            true => format!(
                " (epochs {} dropped as warm-up: the first of each process, and a --resume starts one)",
                warm.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
            ),
            false => String::new(),
        };
        let spread = c.spread().map_or(String::new(), |s| format!(", ranks on {s}"));
        out += &format!(
            "{pad}{} measured epochs{resumed}{spread}, max-rank time {}, {allreduce}{rate}, {} outliers ({} mild, {} severe)\n",
            c.epochs_measured,
            format::seconds(c.training_time.max_rank_mean),
            o.total(),
            o.low_mild + o.high_mild,
            o.low_severe + o.high_severe,
        );
        if let Some(s) = summary.speedup.iter().find(|s| s.id == c.id) {
            let label = if s.unlike.is_empty() { "" } else { " (NOT like for like)" };
            out += &format!(
                "{pad}speedup over {}{label}: time {}  thrpt {}  efficiency {}{}\n",
                s.reference,
                Terminal.ratio(&s.training_time),
                Terminal.ratio(&s.tokens_per_sec),
                Terminal.estimate(&s.efficiency_interval, &format::three),
                match s.paired_epochs {
                    0 => String::new(),
                    n => format!("  ({n} epoch pairs)"),
                },
            );
            if !s.unlike.is_empty() {
                out += &format!(
                    "{pad}WARNING: not like for like ({}). {}\n",
                    s.unlike.join("; "),
                    SpeedupSummary::UNLIKE_FIX
                );
            }
            if let Some(o) = &s.of_independent {
                out += &format!(
                    "{pad}of what the cores allow: {} of the throughput of {}\n",
                    Terminal.ratio(&o.tokens_per_sec),
                    o.id
                );
            }
            if c.is_independent() {
                out += &format!(
                    "{pad}{} independent 1-rank runs side by side, no communication: the most {} ranks can reach here\n",
                    c.world_size, c.world_size
                );
            }
            if let Some(f) = &s.shortfall {
                let share = |e: &Estimate| format!("{}%", format::share(e.point));
                let parts: Vec<String> =
                    f.parts().iter().map(|(name, e)| format!("{name} {}", share(e))).collect();
                out += &format!(
                    "{pad}short of linear: {} of the ranks' time = {}\n",
                    share(&f.total),
                    parts.join(" + ")
                );
            }
        }
        if let Some(command) = &c.command {
            out += &format!("{pad}trained by `{command}`\n");
        }
        if let Some(ch) = changes.iter().find(|ch| ch.id == c.id) {
            let name = baseline.unwrap_or("baseline");
            out += &format!(
                "{pad}vs baseline {name:?}: time {} (p = {:.3})  {}\n",
                percent(&ch.training_time),
                ch.training_time.p_value,
                ch.training_time.verdict
            );
            out += &format!(
                "{pad}{:>w$}  thrpt {} (p = {:.3})  {}\n",
                "",
                percent(&ch.tokens_per_sec),
                ch.tokens_per_sec.p_value,
                ch.tokens_per_sec.verdict,
                w = name.len() + 14
            );
        }
    }
    for v in &summary.versus {
        out +=
            &format!("{} vs {}: thrpt {}\n", v.ours, v.theirs, Terminal.ratio(&v.tokens_per_sec));
    }
    if summary.reference.is_none() {
        out += "(no one-device configuration: speedups need a run with world size 1)\n";
    }
    if let Some(s) = &summary.sampling {
        out += &format!("{}\n", s.sentence());
    }
    out
}
