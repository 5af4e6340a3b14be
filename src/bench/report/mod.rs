//! Reports consume a `Summary` (and baseline changes): the criterion-like terminal lines, the
//! figures, `summary.json`, the Markdown table, and the HTML page. `write_all` is the one place that decides where
//! each artefact goes.

pub mod html;
pub mod markdown;
pub mod terminal;

use super::plot;
use super::stats::{self, Thresholds};
use super::summary::{BaselineChange, Summary};
use std::path::{Path, PathBuf};

/// Each configuration's change against a saved baseline of the same id (configurations the
/// baseline lacks are skipped).
pub(crate) fn baseline_changes(
    summary: &Summary,
    baseline: &Summary,
    t: Thresholds,
) -> Vec<BaselineChange> {
    let level = summary.confidence_level;
    summary
        .configs
        .iter()
        .filter_map(|c| {
            let old = baseline.configs.iter().find(|o| o.id == c.id)?;
            Some(BaselineChange {
                id: c.id.clone(),
                training_time: stats::compare(
                    &c.samples.training_time,
                    &old.samples.training_time,
                    level,
                    t,
                    true,
                ),
                tokens_per_sec: stats::compare(
                    &c.samples.tokens_per_sec,
                    &old.samples.tokens_per_sec,
                    level,
                    t,
                    false,
                ),
            })
        })
        .collect()
}

/// What an analysis is compared against and where its reports go.
pub struct Publish<'a> {
    /// A saved summary to compare against, with the name the reports give it.
    pub baseline: Option<(&'a str, &'a Summary)>,
    pub outputs: Outputs,
    /// A Markdown file whose data_parallel table (between its markers) becomes this summary's.
    pub update_doc: Option<&'a Path>,
}

/// The tail of every data_parallel analysis, `cargo bench`'s and `dp-bench compare`'s: the
/// changes against the baseline, the terminal report, every file (`write_all`), and the
/// document's table. Returns the HTML page's path and the changes against the baseline.
pub(crate) fn publish(
    summary: &Summary,
    p: &Publish,
) -> anyhow::Result<(PathBuf, Vec<BaselineChange>)> {
    let changes = p
        .baseline
        .map(|(_, old)| baseline_changes(summary, old, Thresholds::default()))
        .unwrap_or_default();
    let name = p.baseline.map(|(name, _)| name);
    print!("{}", terminal::render(summary, &changes, name));
    let page = write_all(summary, &changes, name, &p.outputs)?;
    println!("report: {}", page.display());
    if let Some(doc) = p.update_doc {
        markdown::update_doc(doc, markdown::DocTable::DATA_PARALLEL, &markdown::render(summary))?;
        println!("table: {}", doc.display());
    }
    Ok((page, changes))
}

/// A CI gate (`--fail-on-regression`): an error naming every configuration whose throughput or
/// epoch time criterion's verdict calls regressed against baseline `name`, each with its change,
/// interval and p-value; `Ok` when none did.
pub(crate) fn fail_on_regression(changes: &[BaselineChange], name: &str) -> anyhow::Result<()> {
    use super::format::{change, Layout::Markdown};
    let regressed: Vec<String> = changes
        .iter()
        .flat_map(|c| {
            [("throughput", &c.tokens_per_sec), ("epoch time", &c.training_time)]
                .into_iter()
                .filter(|(_, ch)| ch.verdict == stats::Verdict::Regressed)
                .map(move |(what, ch)| {
                    format!(
                        "{} {what} {} (p = {:.4})",
                        c.id,
                        Markdown.estimate(&ch.relative, &change),
                        ch.p_value
                    )
                })
        })
        .collect();
    anyhow::ensure!(
        regressed.is_empty(),
        "regressed against baseline {name:?}: {}",
        regressed.join("; ")
    );
    Ok(())
}

/// Where the artefacts of one analysis go.
pub struct Outputs {
    /// `summary.json` and `report/index.html` go here.
    pub dir: PathBuf,
    /// PNG and SVG figures go here.
    pub figures: PathBuf,
}

/// Writes `summary.json`, `table.md` (the side-by-side table in Markdown), the figures and the
/// HTML report; returns the report's path.
pub fn write_all(
    summary: &Summary,
    changes: &[BaselineChange],
    baseline_name: Option<&str>,
    out: &Outputs,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&out.dir)?;
    crate::metrics::write_json(&out.dir.join("summary.json"), summary)?;
    crate::metrics::write_atomic(&out.dir.join("table.md"), markdown::render(summary).as_bytes())?;
    let figures = plot::write_figures(summary, &out.figures)?;
    let report_dir = out.dir.join("report");
    std::fs::create_dir_all(&report_dir)?;
    let page = html::page(summary, changes, baseline_name, &figures)?;
    let path = report_dir.join("index.html");
    crate::metrics::write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

/// Adds links to every report under `target/criterion` to `target/criterion/report/index.html`.
/// Criterion rewrites that page at the end of each of its benches, so every bench of this crate
/// calls this last: criterion's page gains a marked section with the links (replaced, not
/// duplicated, on later calls), and without one a page of links is written.
pub fn write_index(criterion: &Path) -> anyhow::Result<PathBuf> {
    let mut links = Vec::new();
    if criterion.is_dir() {
        for entry in std::fs::read_dir(criterion)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "report" && entry.path().join("report/index.html").is_file() {
                links.push(name);
            }
        }
    }
    links.sort();
    let dir = criterion.join("report");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("index.html");
    let existing = std::fs::read_to_string(&path).ok();
    let page = html::index_page(existing.as_deref(), &links);
    crate::metrics::write_atomic(&path, page.as_bytes())?;
    Ok(path)
}
