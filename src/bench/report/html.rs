//! The HTML report: one self-contained page (figures inlined as data URIs, no network) with the
//! summary table, the figures, per-configuration details and the run metadata.

use crate::bench::format::{self, Layout::Html};
use crate::bench::stats::Estimate;
use crate::bench::summary::{
    BaselineChange, ConfigSummary, OfIndependent, Shortfall, SpeedupSummary, Summary,
};
use base64::Engine;
use std::fmt::Write;
use std::path::PathBuf;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'DejaVu Sans', sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.ci { color: #666; font-size: 0.9em; }
.figures img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.improved { color: #17803d; } .regressed { color: #b42318; }
";

/// Marks the page once every image has decoded, so a headless browser test can check it.
const SCRIPT: &str = "
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', ok + '/' + imgs.length);
  document.body.setAttribute('data-table-rows', document.querySelectorAll('#summary tbody tr').length);
});
";

fn summary_table(summary: &Summary, out: &mut String) {
    out.push_str(
        "<table id=summary><thead><tr><th>configuration</th><th>ranks</th><th>global / per-rank batch</th>\
         <th>threads</th><th>epoch time (mean, CI)</th><th>max-rank time</th><th>tokens/s (sum, CI)</th>\
         <th>speedup (time)</th><th>speedup (tokens/s)</th><th>efficiency</th><th>all-reduce share</th>\
         <th>epochs</th></tr></thead><tbody>",
    );
    for c in &summary.configs {
        let t = &c.training_time.stats;
        let r = &c.tokens_per_sec;
        let s = summary.speedup.iter().find(|s| s.id == c.id);
        let _ = write!(
            out,
            "<tr><td><a href=\"#{id}\">{id}</a></td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.world_size.to_string()
                + &c.spread().map_or(String::new(), |s| format!(" <small>({s})</small>")),
            format::recorded(c.global_batch_size, &|b| b.to_string()),
            format::recorded(c.local_batch_size, &|b| b.to_string()),
            format::recorded(c.threads, &|t| t.to_string()),
            Html.interval(t.lower, t.mean, t.upper, &format::seconds),
            format::seconds(c.training_time.max_rank_mean),
            Html.interval(r.lower, r.mean, r.upper, &format::rate),
            s.map_or("reference".into(), |s| Html.ratio(&s.training_time)),
            s.map_or("reference".into(), |s| {
                let mark = if s.unlike.is_empty() { "" } else { " <span class=regressed>⚠</span>" };
                Html.ratio(&s.tokens_per_sec) + mark
            }),
            s.map_or("—".into(), |s| {
                let paired = match s.paired_epochs {
                    0 => String::new(),
                    n => format!(" <small>({n} epoch pairs)</small>"),
                };
                Html.estimate(&s.efficiency_interval, &format::three) + &paired
            }),
            format::recorded(c.allreduce_share, &format::percent),
            c.epochs_measured,
            id = esc(&c.id),
        );
    }
    out.push_str("</tbody></table>");
    unlike(summary, out);
    if !summary.versus.is_empty() {
        ratio_table(
            out,
            "<h2>dp-bench against the PyTorch reference</h2><table id=versus><thead><tr>\
             <th>dp-bench</th><th>reference</th><th>tokens/s ratio (CI)</th></tr></thead><tbody>",
            summary.versus.iter().map(|v| (&v.ours, &v.theirs, &v.tokens_per_sec)),
        );
    }
    ceiling_table(summary, out);
    shortfall_table(summary, out);
    mfu_table(summary, out);
}

/// Each configuration's model FLOPs utilisation against the measured peak, when there is one.
fn mfu_table(summary: &Summary, out: &mut String) {
    let Some(peak) = &summary.peak else { return };
    let _ = write!(
        out,
        "<h2>Model FLOPs utilisation</h2><p>{}</p><table id=mfu><thead><tr><th>configuration</th>\
         <th>matrix products, GFLOP/s a rank</th><th>MFU</th></tr></thead><tbody>",
        esc(&super::markdown::mfu_sentence(peak))
    );
    for c in &summary.configs {
        let rate = c.flops_per_rank_per_sec().map_or("—".into(), |r| format!("{:.1}", r / 1e9));
        let mfu = c.mfu.map_or("—".into(), format::percent);
        let _ = write!(out, "<tr><td>{}</td><td>{rate}</td><td>{mfu}</td></tr>", esc(&c.id));
    }
    out.push_str("</tbody></table>");
}

/// Each multi-rank run's share of what the cores allow, when the independent runs ran.
fn ceiling_table(summary: &Summary, out: &mut String) {
    let rows: Vec<_> =
        summary.speedup.iter().filter_map(|s| Some((s, s.of_independent.as_ref()?))).collect();
    if rows.is_empty() {
        return;
    }
    let head = format!(
        "<h2>Against what the cores allow</h2><p>{}</p><table id=ceiling><thead><tr>\
         <th>configuration</th><th>independent 1-rank runs</th><th>tokens/s ratio (CI)</th>\
         </tr></thead><tbody>",
        esc(OfIndependent::NOTE)
    );
    ratio_table(out, &head, rows.into_iter().map(|(s, o)| (&s.id, &o.id, &o.tokens_per_sec)));
}

/// A table of tokens/s ratios after `head` (its heading and header row): one row per pair of
/// configurations and their ratio.
fn ratio_table<'a>(
    out: &mut String,
    head: &str,
    rows: impl Iterator<Item = (&'a String, &'a String, &'a Estimate)>,
) {
    out.push_str(head);
    for (a, b, r) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(a),
            esc(b),
            Html.ratio(r)
        );
    }
    out.push_str("</tbody></table>");
}

/// Where each of dp-bench's multi-rank runs falls short of linear scaling, when any does.
fn shortfall_table(summary: &Summary, out: &mut String) {
    let rows: Vec<_> =
        summary.speedup.iter().filter_map(|s| Some((s, s.shortfall.as_ref()?))).collect();
    let Some((_, first)) = rows.first() else { return };
    let _ = write!(
        out,
        "<h2>Where the multi-rank runs fall short of linear scaling</h2><p>The rank-seconds each \
         run spends beyond its 1-rank run's time for the same input positions, split as the \
         epoch records split time, in % of the run's rank-seconds{}. {}</p>\
         <table id=shortfall><thead><tr><th>configuration</th><th>short of linear</th>",
        match first.pairs {
            0 => " (from the means of the runs)".to_string(),
            n => format!(" (mean over {n} epoch pairs, with its interval)"),
        },
        esc(Shortfall::NOTE)
    );
    for (name, _) in first.parts() {
        let _ = write!(out, "<th>{name}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    let percent = |e: &Estimate| Html.estimate(e, &|v| format!("{}%", format::share(v)));
    for (s, f) in rows {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td>", esc(&s.id), percent(&f.total));
        for (_, e) in f.parts() {
            let _ = write!(out, "<td>{}</td>", percent(&e));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn baseline_table(changes: &[BaselineChange], name: &str, out: &mut String) {
    let _ = write!(
        out,
        "<h2>Against baseline “{}”</h2><table><thead><tr><th>configuration</th><th>time change (CI)</th>\
         <th>p</th><th>verdict</th><th>throughput change (CI)</th><th>p</th><th>verdict</th></tr></thead><tbody>",
        esc(name)
    );
    let pct = |e: &Estimate| Html.estimate(e, &format::change);
    for c in changes {
        let class = |v: crate::bench::stats::Verdict| format!("{v:?}").to_lowercase();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td class={}>{}</td><td>{}</td><td>{:.3}</td><td class={}>{}</td></tr>",
            esc(&c.id),
            pct(&c.training_time.relative),
            c.training_time.p_value,
            class(c.training_time.verdict),
            c.training_time.verdict,
            pct(&c.tokens_per_sec.relative),
            c.tokens_per_sec.p_value,
            class(c.tokens_per_sec.verdict),
            c.tokens_per_sec.verdict,
        );
    }
    out.push_str("</tbody></table>");
}

/// A per-epoch column of the details table: its name, values and how each is written.
type Column<'a> = (&'static str, &'a [f64], fn(f64) -> String);

fn details(c: &ConfigSummary, level: f64, out: &mut String) -> anyhow::Result<()> {
    let t = &c.training_time.stats;
    let o = &t.outliers;
    let ranks = match c.is_independent() {
        true => format!("{} independent 1-rank runs side by side, no communication,", c.world_size),
        false => format!("{} ranks", c.world_size),
    };
    let setup = match (&c.run, c.local_batch_size, c.global_batch_size) {
        (Some(_), Some(local), Some(global)) => format!(
            "{ranks} × {local} examples per step ({global} in all), {} threads per rank, preset {}, \
             dataset {}.",
            format::recorded(c.threads, &|t| t.to_string()),
            esc(c.preset.as_deref().unwrap_or("?")),
            esc(c.dataset.as_deref().unwrap_or("?")),
        ),
        (_, _, global) => format!(
            "{ranks}, trained by {}{}; {}. Batch per rank, threads, model and data: {}.",
            esc(&c.implementation),
            c.command.as_ref().map_or(String::new(), |cmd| format!(" (<code>{}</code>)", esc(cmd))),
            global.map_or("global batch not recorded".into(), |b| format!(
                "{b} examples per step in all"
            )),
            format::NOT_RECORDED,
        ),
    };
    let _ = write!(
        out,
        "<h2 id=\"{id}\">{id}</h2><p>{setup} Run directory <code>{}</code>.</p>\
         <p>Epoch time: mean {}, median {}, std dev {}, min {}, max {}; {:.0}% interval {} – {}. \
         Tukey outliers: {} low severe, {} low mild, {} high mild, {} high severe.</p>",
        esc(&c.run_dir),
        format::seconds(t.mean),
        format::seconds(t.median),
        format::seconds(t.std_dev),
        format::seconds(t.min),
        format::seconds(t.max),
        level * 100.0,
        format::seconds(t.lower),
        format::seconds(t.upper),
        o.low_severe,
        o.low_mild,
        o.high_mild,
        o.high_severe,
        id = esc(&c.id),
    );
    if let Some(rate) = c.flops_per_rank_per_sec() {
        let _ = write!(
            out,
            "<p>Matrix products (forward and backward, counted from the batches' shapes): {:.1} \
             GFLOP/s a rank{}.</p>",
            rate / 1e9,
            c.mfu.map_or(String::new(), |m| format!(
                ", {} of the device's measured peak (MFU)",
                format::percent(m)
            ))
        );
    }
    let s = &c.samples;
    // The time split and the evaluation, each where the records give it.
    let columns: [Column; 6] = [
        ("compute", &s.compute_time, format::seconds),
        ("wait", &s.wait_time, format::seconds),
        ("all-reduce", &s.allreduce_time, format::seconds),
        ("batching", &s.data_time, format::seconds),
        ("validation loss", &s.validation_loss, |v| format!("{v:.4}")),
        ("BLEU", &s.bleu, |v| format!("{v:.2}")),
    ];
    let (optional, missing): (Vec<Column>, Vec<Column>) =
        columns.into_iter().partition(|(_, v, _)| v.len() == s.epochs.len());
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(name, _, _)| *name).collect();
        let _ = write!(out, "<p>{}: {}.</p>", names.join(", "), format::NOT_RECORDED);
    }
    out.push_str("<table><thead><tr><th>epoch</th><th>time (mean over ranks)</th><th>max over ranks</th><th>tokens/s (sum)</th>");
    for (name, _, _) in &optional {
        let _ = write!(out, "<th>{name}</th>");
    }
    for r in 0..c.world_size {
        let _ = write!(out, "<th>rank {r}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for i in 0..s.epochs.len() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            s.epochs[i],
            format::seconds(s.training_time[i]),
            format::seconds(s.training_time_max[i]),
            format::rate(s.tokens_per_sec[i]),
        );
        for (_, values, show) in &optional {
            let _ = write!(out, "<td>{}</td>", show(values[i]));
        }
        for rank in &s.per_rank_time {
            let _ = write!(out, "<td>{}</td>", format::seconds(rank[i]));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if let Some(run) = &c.run {
        out.push_str("<details><summary>run.json</summary><pre>");
        out.push_str(&esc(&serde_json::to_string_pretty(run)?));
        out.push_str("</pre></details>");
    }
    Ok(())
}

/// The report page; `figures` are PNG files inlined as data URIs.
/// The comparisons that are not like for like (marked ⚠ in the table), and the fix.
fn unlike(summary: &Summary, out: &mut String) {
    let unlike: Vec<_> = summary.speedup.iter().filter(|s| !s.unlike.is_empty()).collect();
    if unlike.is_empty() {
        return;
    }
    out.push_str(
        "<div id=unlike class=regressed><p><strong>Not like for like (⚠):</strong></p><ul>",
    );
    for s in unlike {
        let _ = write!(
            out,
            "<li><code>{}</code> against <code>{}</code>: {}</li>",
            esc(&s.id),
            esc(&s.reference),
            esc(&s.unlike.join("; "))
        );
    }
    let _ = write!(out, "</ul><p>{}.</p></div>", esc(SpeedupSummary::UNLIKE_FIX));
}

pub fn page(
    summary: &Summary,
    changes: &[BaselineChange],
    baseline: Option<&str>,
    figures: &[PathBuf],
) -> anyhow::Result<String> {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>data_parallel — dp-bench report</title>\
         <style>{STYLE}</style><script>{SCRIPT}</script></head><body><h1>data_parallel: what data parallelism buys</h1>\
         <p>Each configuration is a separate <code>mpirun</code> run. Samples are the epochs after {} warm-up epoch(s): \
         epoch time is the mean over ranks (the max is shown too), throughput the sum over ranks. \
         Intervals are {:.0}% — {}.</p>",
        summary.warmup_epochs,
        summary.confidence_level * 100.0,
        esc(&summary.interval_method),
    );
    if let Some(s) = &summary.sampling {
        let _ = write!(out, "<p id=sampling>{}</p>", esc(&s.sentence()));
    }
    summary_table(summary, &mut out);
    if let (Some(name), false) = (baseline, changes.is_empty()) {
        baseline_table(changes, name, &mut out);
    }
    out.push_str("<h2>Figures</h2><div class=figures>");
    for f in figures {
        let bytes = std::fs::read(f)?;
        let alt = f.file_stem().unwrap_or_default().to_string_lossy().replace('_', " ");
        let _ = write!(
            out,
            "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
            esc(&alt),
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
    }
    out.push_str("</div>");
    for c in &summary.configs {
        details(c, summary.confidence_level, &mut out)?;
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

const INDEX_BEGIN: &str = "<!-- dp-bench reports -->";
const INDEX_END: &str = "<!-- /dp-bench reports -->";

/// The index of all benchmark reports under `target/criterion`: `existing` (criterion's page)
/// with a marked section of links, or a page of its own.
pub(crate) fn index_page(existing: Option<&str>, benches: &[String]) -> String {
    let mut section = format!("{INDEX_BEGIN}<section><h2>All benchmark reports</h2><ul>");
    for b in benches {
        let _ = write!(section, "<li><a href=\"../{0}/report/index.html\">{0}</a></li>", esc(b));
    }
    section.push_str("</ul></section>");
    section.push_str(INDEX_END);
    match existing {
        Some(page) if page.contains(INDEX_BEGIN) && page.contains(INDEX_END) => {
            let (head, rest) = page.split_once(INDEX_BEGIN).expect("checked");
            let (_, tail) = rest.split_once(INDEX_END).expect("checked");
            format!("{head}{section}{tail}")
        }
        Some(page) if page.contains("</body>") => page.replacen("</body>", &format!("{section}</body>"), 1),
        _ => format!(
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Benchmark reports</title>\
             <style>{STYLE}</style></head><body><h1>Benchmark reports</h1>{section}</body></html>\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_section_is_added_once_and_replaced() {
        let criterion = "<html><body><h1>Criterion.rs Benchmark Index</h1></body></html>";
        let a = index_page(Some(criterion), &["allreduce".into()]);
        assert!(a.contains("Criterion.rs") && a.contains("../allreduce/report/index.html"));
        let b = index_page(Some(&a), &["allreduce".into(), "data_parallel".into()]);
        assert_eq!(b.matches(INDEX_BEGIN).count(), 1);
        assert!(b.contains("../data_parallel/report/index.html"));
        assert!(index_page(None, &[]).contains("<h1>Benchmark reports</h1>"));
    }
}
