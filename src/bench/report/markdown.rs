//! The side-by-side table of a `Summary` in Markdown (what BENCHMARKS.md shows), and the splice
//! that puts a bench's table into a document between two marker lines, so that one command
//! regenerates it: `cargo bench --bench data_parallel -- --update-doc BENCHMARKS.md` (and the
//! padding bench's the same way).

use crate::bench::format::{self, markdown_percent, markdown_ratio, Layout::Markdown};
use crate::bench::summary::{ConfigSummary, OfIndependent, Shortfall, SpeedupSummary, Summary};
use crate::metrics::RunInfo;
use std::path::Path;

/// A generated table's place in a document: after the line `<!-- dp-bench NAME table: begin -->`
/// and before `<!-- dp-bench NAME table: end -->`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocTable(&'static str);

impl DocTable {
    /// `cargo bench --bench data_parallel`'s side-by-side table ([`render`]).
    pub(crate) const DATA_PARALLEL: DocTable = DocTable("data_parallel");
    /// `cargo bench --bench padding`'s table.
    pub(crate) const PADDING: DocTable = DocTable("padding");

    /// The line after which the table starts.
    pub fn begin(self) -> String {
        format!("<!-- dp-bench {} table: begin -->", self.0)
    }

    /// The line before which it ends.
    pub fn end(self) -> String {
        format!("<!-- dp-bench {} table: end -->", self.0)
    }
}

/// What ran where, from the first dp-bench configuration's `run.json`.
fn machine(c: &ConfigSummary, run: &RunInfo, confidence: f64) -> String {
    let cpu = if run.cpu.is_empty() { "an unrecorded CPU" } else { &run.cpu };
    format!(
        "Measured {} on {cpu} (host `{}`): {}, libtorch {}, {} intra-op thread{} per rank, \
         device {}, precision {}, CPU matrix products through {}. Intervals: {:.0} %; {} measured \
         epochs per dp-bench configuration.",
        run.start_time.get(..10).unwrap_or(&run.start_time),
        run.host,
        run.mpi_library,
        run.libtorch_version,
        run.threads_per_rank,
        if run.threads_per_rank == 1 { "" } else { "s" },
        run.device,
        run.config.precision,
        run.config.cpu_matmul,
        confidence * 100.0,
        c.epochs_measured,
    )
}

/// The table: one row per configuration (epoch time and summed throughput with their
/// intervals, speedup over the one-rank run of the same implementation and the scaling
/// efficiency), then dp-bench's throughput against each reference implementation's.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let ours = summary.configs.iter().find_map(|c| {
        let run = c.run.as_ref().filter(|_| c.implementation == crate::metrics::IMPLEMENTATION)?;
        Some((c, run))
    });
    if let Some((c, run)) = ours {
        out += &machine(c, run, summary.confidence_level);
        if let Some(s) = summary.speedup.iter().find(|s| s.paired_epochs > 0) {
            let within = match c.samples.paused_time.is_empty() {
                true => "",
                false => {
                    " and within epochs (the time a run stood stopped is not its training time)"
                }
            };
            out += &format!(
                " dp-bench's configurations ran side by side, taking turns epoch by epoch{within}; \
                 their speedups and efficiencies pair epoch j of each ({} pairs, Student-t on \
                 the log ratios), the reference's compare means (Fieller).",
                s.paired_epochs
            );
        }
        if let Some(r) = summary.configs.iter().find(|r| r.implementation != c.implementation) {
            out += &format!(
                " The reference: {} measured epochs per configuration.",
                r.epochs_measured
            );
        }
        if let Some(s) = &summary.sampling {
            out += &format!(" {}", s.sentence());
        }
        out += "\n\n";
    } else if let Some(c) = summary.configs.first() {
        out += &format!(
            "Runs recorded by their own trainer: machine, device, batch per rank and threads are \
             {}. Intervals: {:.0} %; {} measured epochs of `{}` after {} warm-up.\n\n",
            format::NOT_RECORDED,
            summary.confidence_level * 100.0,
            c.epochs_measured,
            c.id,
            summary.warmup_epochs
        );
    }
    if let Some(p) = &summary.peak {
        out += &format!("{}\n\n", mfu_sentence(p));
    }
    let (mfu_head, mfu_rule) = match summary.peak {
        Some(_) => (" MFU |", " --- |"),
        None => ("", ""),
    };
    out += &format!(
        "| configuration | implementation | ranks | epoch time (95 % CI) | tokens/s, sum (95 % CI) \
         | speedup over its 1-rank run (95 % CI) | scaling efficiency (95 % CI) |{mfu_head}\n"
    );
    out += &format!("| --- | --- | --- | --- | --- | --- | --- |{mfu_rule}\n");
    for c in &summary.configs {
        let t = &c.training_time.stats;
        let r = &c.tokens_per_sec;
        let (speedup, efficiency) = match summary.speedup.iter().find(|s| s.id == c.id) {
            Some(s) => (
                Markdown.ratio(&s.tokens_per_sec) + if s.unlike.is_empty() { "" } else { " ⚠" },
                markdown_ratio(&s.efficiency_interval, "", true),
            ),
            None => ("—".to_string(), "—".to_string()),
        };
        let implementation = match c.is_independent() {
            true => format!("{}, independent 1-rank runs", c.implementation),
            false => c.implementation.clone(),
        };
        let mfu = match (&summary.peak, c.mfu) {
            (None, _) => String::new(),
            (Some(_), Some(m)) => format!(" {} |", format::percent(m)),
            (Some(_), None) => " — |".to_string(),
        };
        out += &format!(
            "| `{}` | {implementation} | {} | {} | {} | {speedup} | {efficiency} |{mfu}\n",
            c.id,
            c.world_size.to_string() + &c.spread().map_or(String::new(), |s| format!(" ({s})")),
            Markdown.interval(t.lower, t.mean, t.upper, &format::seconds),
            Markdown.interval(r.lower, r.mean, r.upper, &format::rate),
        );
    }
    if !summary.versus.is_empty() {
        out += "\nTokens/s, dp-bench ÷ reference (95 % CI):";
        for v in &summary.versus {
            let r = markdown_ratio(&v.tokens_per_sec, "×", true);
            out += &format!(" `{}` ÷ `{}` {r};", v.ours, v.theirs);
        }
        out.pop();
        out += ".\n";
    }
    unlike(summary, &mut out);
    ceiling(summary, &mut out);
    shortfall_table(summary, &mut out);
    out
}

/// What the MFU column is a share of.
pub(crate) fn mfu_sentence(p: &crate::bench::device::Peak) -> String {
    format!(
        "MFU: each rank's model FLOPs per second (the matrix products of forward and backward, \
         counted from the batches' shapes, the LM head at target positions only; the same count \
         for the reference) as a share of {:.1} GFLOP/s, the peak measured at the start of the \
         bench on {} ({}).",
        p.flops_per_sec / 1e9,
        p.device,
        p.measured
    )
}

/// The comparisons that are not like for like (marked ⚠ in the table), and the fix.
fn unlike(summary: &Summary, out: &mut String) {
    let unlike: Vec<_> = summary.speedup.iter().filter(|s| !s.unlike.is_empty()).collect();
    if unlike.is_empty() {
        return;
    }
    *out += "\n**Not like for like** (⚠):";
    for s in unlike {
        *out += &format!(" `{}` against `{}`: {};", s.id, s.reference, s.unlike.join("; "));
    }
    out.pop();
    *out += &format!(". {}.\n", SpeedupSummary::UNLIKE_FIX);
}

/// Each multi-rank run's share of what the cores allow, when the independent runs ran.
fn ceiling(summary: &Summary, out: &mut String) {
    let shares: Vec<String> = summary
        .speedup
        .iter()
        .filter_map(|s| {
            let o = s.of_independent.as_ref()?;
            Some(format!(
                " `{}` ÷ `{}` {};",
                s.id,
                o.id,
                markdown_ratio(&o.tokens_per_sec, "×", true)
            ))
        })
        .collect();
    if shares.is_empty() {
        return;
    }
    *out += &format!(
        "\nShare of what the cores allow (tokens/s ÷ those of as many independent 1-rank runs, \
         95 % CI):{}. {}\n",
        shares.concat().trim_end_matches(';'),
        OfIndependent::NOTE
    );
}

/// Where each of dp-bench's multi-rank runs falls short of linear scaling, when any does.
fn shortfall_table(summary: &Summary, out: &mut String) {
    let rows: Vec<_> =
        summary.speedup.iter().filter_map(|s| Some((s, s.shortfall.as_ref()?))).collect();
    let Some((_, first)) = rows.first() else { return };
    let over = match first.pairs {
        0 => "from the means of the runs".to_string(),
        n => format!("mean over the {n} epoch pairs, 95 % CI"),
    };
    *out += &format!(
        "\nWhere dp-bench's multi-rank runs fall short of linear scaling: the rank-seconds each \
         spends beyond its 1-rank run's time for the same input positions, split as the epoch \
         records split time, in % of the run's rank-seconds ({over}). {}\n\n",
        Shortfall::NOTE
    );
    let parts = first.parts().map(|(name, _)| name);
    *out += &format!("| configuration | short of linear | {} |\n", parts.join(" | "));
    *out += &format!("| --- | --- |{}\n", " --- |".repeat(parts.len()));
    for (s, f) in rows {
        let cells: Vec<String> = f.parts().iter().map(|(_, e)| markdown_percent(e)).collect();
        *out +=
            &format!("| `{}` | {} | {} |\n", s.id, markdown_percent(&f.total), cells.join(" | "));
    }
}

/// `doc` with the lines between `at`'s marker lines replaced by `table`. The markers stay, so
/// the next run replaces the table again; everything else is kept as it is.
pub(crate) fn splice(doc: &str, at: DocTable, table: &str) -> Result<String, String> {
    let (begin, end) = (at.begin(), at.end());
    let line_at = |marker: &str| {
        let mut offset = 0;
        for line in doc.split_inclusive('\n') {
            if line.trim() == marker {
                return Some((offset, offset + line.len()));
            }
            offset += line.len();
        }
        None
    };
    let missing = || format!("has no lines `{begin}` and `{end}`: add them where the table goes");
    let (Some((_, begin_end)), Some((end_start, _))) = (line_at(&begin), line_at(&end)) else {
        return Err(missing());
    };
    if end_start < begin_end {
        return Err(format!("has `{end}` before `{begin}`"));
    }
    let mut table = table.to_string();
    if !table.ends_with('\n') {
        table.push('\n');
    }
    Ok(format!("{}{table}{}", &doc[..begin_end], &doc[end_start..]))
}

/// The document at `path` read and spliced with `table`; errors name the file.
fn spliced(path: &Path, at: DocTable, table: &str) -> anyhow::Result<String> {
    let doc = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    splice(&doc, at, table).map_err(|e| anyhow::anyhow!("{} {e}", path.display()))
}

/// Checks, before any work, that `path` is a readable document with `at`'s markers.
pub(crate) fn check_doc(path: &Path, at: DocTable) -> anyhow::Result<()> {
    spliced(path, at, "").map(drop).map_err(|e| anyhow::anyhow!("--update-doc: {e}"))
}

/// Replaces `at`'s table in the document at `path` with `table` (written whole to a temporary
/// name and renamed, so an interrupted write leaves the old document). A document without the
/// markers is an error and is left untouched.
pub(crate) fn update_doc(path: &Path, at: DocTable, table: &str) -> anyhow::Result<()> {
    let new = spliced(path, at, table)?;
    crate::metrics::write_atomic(path, new.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_between_the_markers_and_keeps_them() {
        let at = DocTable::DATA_PARALLEL;
        let (b, e) = (at.begin(), at.end());
        assert_eq!(b, "<!-- dp-bench data_parallel table: begin -->");
        let doc = format!("# Title\nbefore\n{b}\nold table\nold line\n{e}\nafter\n");
        let new = splice(&doc, at, "| new |").unwrap();
        assert_eq!(new, format!("# Title\nbefore\n{b}\n| new |\n{e}\nafter\n"));
        // A second splice gives the same document: the markers survived.
        assert_eq!(splice(&new, at, "| new |").unwrap(), new);
        // Another table's markers in the same document are another place.
        let (pb, pe) = (DocTable::PADDING.begin(), DocTable::PADDING.end());
        let both = format!("{new}{pb}\nold\n{pe}\n");
        let padded = splice(&both, DocTable::PADDING, "| p |").unwrap();
        assert_eq!(padded, format!("{new}{pb}\n| p |\n{pe}\n"));
    }

    #[test]
    fn splice_refuses_documents_without_markers_or_in_the_wrong_order() {
        let at = DocTable::DATA_PARALLEL;
        let (b, e) = (at.begin(), at.end());
        assert!(splice("# no markers\n", at, "x").unwrap_err().contains("has no lines"));
        assert!(splice(&format!("{b}\n"), at, "x").unwrap_err().contains("has no lines"));
        let swapped = format!("{e}\ntext\n{b}\n");
        assert!(splice(&swapped, at, "x").unwrap_err().contains("before"));
        let other = format!("{}\n{}\n", DocTable::PADDING.begin(), DocTable::PADDING.end());
        assert!(splice(&other, at, "x").unwrap_err().contains("has no lines"));
    }
}
