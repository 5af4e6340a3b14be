//! `cargo bench --bench padding`: what dynamic padding buys on real sentences. One rank trains the
//! same Multi30k examples with the same batches under `--padding fixed`, `--padding dynamic` and
//! `--padding dynamic --bucket-by-length`, each as its own run, side by side and taking turns
//! epoch by epoch as `data_parallel`'s configurations do; the report gives each epoch time with
//! its interval and how many times faster than fixed padding each variant is (epoch j of each
//! paired), and how many times less floating-point work its matrix products do: the speedup
//! padding less would give if every operation took as long as under fixed padding.

use super::analysis::took_turns;
use super::format;
use super::report::markdown::{check_doc, update_doc, DocTable};
use super::run_data::RunData;
use super::runner::{bound_launcher, criterion_dir};
use super::stats::{self, Estimate};
use super::summary::Samples;
use super::turns::{run_in_turns, Turn, TurnArgs};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Options of `cargo bench --bench padding -- [OPTIONS] [FILTER]`.
#[derive(Debug, Clone, Parser)]
#[command(name = "padding", about = "Fixed against dynamic padding on real sentences, one rank")]
pub struct PaddingArgs {
    /// Smaller workload for CI (512 examples, 1 warm-up + 3 measured epochs)
    #[arg(long, env = "DP_BENCH_QUICK")]
    pub quick: bool,
    /// A corpus directory or file (as `dp-bench --dataset`) [default: ../shared/data/multi30k]
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Training examples per epoch [default: 5000, 512 with --quick]
    #[arg(long)]
    pub train_examples: Option<usize>,
    /// Epochs per variant, warm-up included. The variants run side by side and take turns epoch
    /// by epoch (fixed, dynamic, dynamic_buckets, fixed, …), so the machine's drift in speed over
    /// minutes falls on every variant alike instead of on their ratio [default: 9, 4 with --quick]
    #[arg(long)]
    pub epochs: Option<usize>,
    #[command(flatten)]
    pub run: super::RunArgs,
    #[command(flatten)]
    pub turns: TurnArgs,
    /// Replace the table between the `<!-- dp-bench padding table: begin/end -->` lines of this
    /// Markdown file (e.g. BENCHMARKS.md) with this run's (also in target/criterion/padding/table.md)
    #[arg(long, value_name = "FILE")]
    pub update_doc: Option<PathBuf>,
    /// Run only variants whose name contains this text (fixed always runs: it is the baseline)
    pub filter: Option<String>,
}

/// The variants: a name and the flags that make it.
const VARIANTS: [(&str, &[&str]); 3] = [
    ("fixed", &["--padding", "fixed"]),
    ("dynamic", &["--padding", "dynamic"]),
    ("dynamic_buckets", &["--padding", "dynamic", "--bucket-by-length"]),
];

impl PaddingArgs {
    pub fn epochs(&self) -> usize {
        self.epochs.unwrap_or(if self.quick { 4 } else { 9 })
    }

    /// Examples per step (one rank, on the CPU).
    fn batch(&self) -> usize {
        self.run.batch.unwrap_or(super::device::CPU_BATCH)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.turns.validate()?;
        anyhow::ensure!(
            self.epochs() >= self.run.warmup + 2,
            "--epochs {} leaves fewer than 2 measured epochs after --warmup {}",
            self.epochs(),
            self.run.warmup
        );
        anyhow::ensure!(self.batch() > 0, "--batch must be positive");
        if let Some(doc) = &self.update_doc {
            check_doc(doc, DocTable::PADDING)?;
        }
        anyhow::ensure!(
            self.run.confidence > 0.0 && self.run.confidence < 1.0,
            "--confidence must be in (0, 1)"
        );
        Ok(())
    }
}

/// One variant's result.
#[derive(Debug, Clone, Serialize)]
pub struct PaddingResult {
    pub variant: String,
    pub epoch_time: stats::Summary,
    /// Epochs the statistics come from (after the warm-up).
    pub measured_epochs: usize,
    /// Input positions per epoch (padding included).
    pub positions: u64,
    pub target_tokens: u64,
    /// Mean training loss of the last epoch.
    pub train_loss: f64,
    /// Epoch time of fixed padding ÷ this variant's.
    pub speedup_over_fixed: Estimate,
    /// Epoch pairs the speedup comes from (the runs took turns); 0: from the means (Fieller).
    pub paired_epochs: usize,
    /// Floating-point operations of an epoch's matrix products (mean over the measured epochs;
    /// `GptConfig::step_flops`), and their rate over the epoch time.
    pub flops: f64,
    pub flops_per_sec: f64,
    /// Fixed padding's operations ÷ this variant's: the speedup that padding less would give if
    /// every operation took as long as under fixed padding.
    pub work_ratio: f64,
}

/// Runs the variants and reports; `binary` is `dp-bench`, `root` the project root.
pub fn run_padding_bench(
    args: &PaddingArgs,
    binary: &Path,
    root: &Path,
) -> anyhow::Result<Vec<PaddingResult>> {
    args.validate()?;
    let dataset = args.dataset.clone().unwrap_or_else(|| root.join("../shared/data/multi30k"));
    anyhow::ensure!(dataset.exists(), "no corpus at {} (pass --dataset)", dataset.display());
    let examples = args.train_examples.unwrap_or(if args.quick { 512 } else { 5000 });
    let variants: Vec<_> = VARIANTS
        .iter()
        .filter(|(name, _)| {
            *name == "fixed" || args.filter.as_ref().is_none_or(|f| name.contains(f.as_str()))
        })
        .collect();
    let out_dir = criterion_dir(root).join("padding");
    let total = variants.len() * args.epochs();
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(
            "{prefix:>16} [{bar:40}] {pos}/{len} epochs {elapsed_precise}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let dataset_arg = dataset
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("the corpus path {} is not UTF-8", dataset.display()))?;
    let dir = |name: &str| out_dir.join("runs").join(name);
    let (batch, epochs) = (args.batch().to_string(), args.epochs().to_string());
    let (examples, threads) = (examples.to_string(), args.run.threads.to_string());
    let common = [
        ["--batch-size", &batch],
        ["--n-epochs", &epochs],
        ["--train-examples", &examples],
        ["--threads", &threads],
        ["--preset", args.run.preset.as_deref().unwrap_or(super::device::CPU_PRESET)],
        ["--dataset", dataset_arg],
    ]
    .concat();
    let turns = variants
        .iter()
        .map(|(name, flags)| {
            let mut command = bound_launcher(&args.run.mpirun, 1, args.run.threads, true);
            command
                .arg(binary)
                .args(common.iter().chain(&["--benchmark-only", "--overwrite"]).chain(flags.iter()))
                .arg("--workdir")
                .arg(dir(name));
            let gate = out_dir.join("runs").join(format!(".gate-{name}"));
            Turn { id: format!("padding/{name}"), ranks: 1, command, gate }
        })
        .collect();
    for (id, outcome) in
        run_in_turns(turns, &args.turns.options(args.epochs()), &bar, &mut |_| true)
    {
        outcome.map_err(|e| anyhow::anyhow!("{id}: {e:#}"))?;
    }
    bar.finish_and_clear();
    let runs = variants
        .iter()
        .map(|(name, _)| Ok((name.to_string(), RunData::load(&dir(name))?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let results = analyse(&runs, args.run.warmup, args.run.confidence)?;
    for result in &results {
        println!("{}", render(result));
    }
    crate::metrics::write_json(&out_dir.join("summary.json"), &results)?;
    println!("summary: {}", out_dir.join("summary.json").display());
    let doc_table = table(&results, &runs[0].1, args.run.confidence);
    crate::metrics::write_atomic(&out_dir.join("table.md"), doc_table.as_bytes())?;
    if let Some(doc) = &args.update_doc {
        update_doc(doc, DocTable::PADDING, &doc_table)?;
        println!("table: {}", doc.display());
    }
    Ok(results)
}

/// Each variant's statistics from its run (`runs[0]` is fixed padding, the baseline), after
/// `warmup` epochs, with intervals at `level`.
pub fn analyse(
    runs: &[(String, RunData)],
    warmup: usize,
    level: f64,
) -> anyhow::Result<Vec<PaddingResult>> {
    let fixed = runs[0].1.samples(warmup)?;
    // Mean over the measured epochs of their operations.
    let work = |run: &RunData, samples: &Samples| {
        let flops = &samples.flops;
        anyhow::ensure!(
            !flops.is_empty(),
            "{}: the epoch records do not count operations",
            run.dir.display()
        );
        Ok(stats::mean(flops))
    };
    let fixed_flops = work(&runs[0].1, &fixed)?;
    let mut results = Vec::new();
    for (name, run) in runs {
        let samples = run.samples(warmup)?;
        let t = &samples.training_time;
        let paired = took_turns(&fixed, &samples)
            .then(|| stats::paired_ratio(&fixed.training_time, t, level))
            .flatten();
        let last = &run.epochs.last().expect("measured epochs")[0];
        let count = |key: &str, v: Option<f64>| {
            v.ok_or_else(|| anyhow::anyhow!("{}: the epoch records lack {key}", run.dir.display()))
        };
        let flops = work(run, &samples)?;
        let result = PaddingResult {
            variant: name.clone(),
            epoch_time: stats::Summary::of(t, level),
            measured_epochs: t.len(),
            positions: count("tokens", last.tokens)? as u64,
            target_tokens: count("target_tokens", last.target_tokens)? as u64,
            train_loss: count("train_loss", last.train_loss)?,
            speedup_over_fixed: paired
                .unwrap_or_else(|| stats::ratio_estimate(&fixed.training_time, t, level)),
            paired_epochs: if paired.is_some() { t.len() } else { 0 },
            flops,
            flops_per_sec: flops / stats::mean(t),
            work_ratio: fixed_flops / flops,
        };
        results.push(result);
    }
    Ok(results)
}

/// A corpus as a document names it: its file or directory name (`multi30k`), not the path
/// on the machine that ran it.
fn corpus_name(dataset: &str) -> &str {
    Path::new(dataset).file_name().and_then(|n| n.to_str()).unwrap_or(dataset)
}

/// `v` with thousands separated by commas.
fn thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// The results as BENCHMARKS.md shows them: what ran where, then one row per variant; `fixed`
/// is the fixed-padding run, whose `run.json` describes the machine.
pub fn table(results: &[PaddingResult], fixed: &RunData, level: f64) -> String {
    let run = fixed.info().expect("the padding bench's runs are dp-bench's");
    let c = &run.config;
    let cpu = if run.cpu.is_empty() { "an unrecorded CPU" } else { &run.cpu };
    let pairs = results.iter().map(|r| r.paired_epochs).max().unwrap_or(0);
    let turns = match pairs {
        0 => "compared by their means (Fieller)".to_string(),
        n => format!(
            "taking turns, so the speedups pair epoch j of each ({n} pairs, Student-t on the log \
             ratios)"
        ),
    };
    let mut out = format!(
        "Measured {} on {cpu} (host `{}`): libtorch {}, one rank, {} intra-op thread{}, CPU matrix \
         products through {}; preset {}, {} training examples of {}, batch {}, {} measured epochs \
         per variant, the variants {turns}. Intervals: {:.0} %.\n\n",
        run.start_time.get(..10).unwrap_or(&run.start_time),
        run.host,
        run.libtorch_version,
        run.threads_per_rank,
        if run.threads_per_rank == 1 { "" } else { "s" },
        c.cpu_matmul,
        c.preset,
        c.train_examples,
        corpus_name(&c.dataset.to_string()),
        c.batch_size,
        results.first().map_or(0, |r| r.measured_epochs),
        level * 100.0,
    );
    out += &format!(
        "| padding | epoch time ({0:.0} % CI) | × faster than fixed ({0:.0} % CI) | input positions \
         | matrix products per epoch | their rate | fixed's operations ÷ these | train loss, last \
         epoch |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
        level * 100.0
    );
    let two = |v: f64| format!("{v:.2}");
    for r in results {
        let (s, x) = (&r.epoch_time, &r.speedup_over_fixed);
        let is_fixed = r.variant == "fixed";
        let speedup = match is_fixed {
            true => "—".to_string(),
            false => format!(
                "**{:.2}×** [{}, {}]",
                x.point,
                format::finite(x.lower, &two),
                format::finite(x.upper, &two)
            ),
        };
        out += &format!(
            "| `{}` | {:.2} s [{}, {}] | {speedup} | {} | {} GFLOP | {:.1} GFLOP/s | {} | {:.4} |\n",
            r.variant,
            s.mean,
            format::finite(s.lower, &two),
            format::finite(s.upper, &two),
            thousands(r.positions),
            thousands((r.flops / 1e9).round() as u64),
            r.flops_per_sec / 1e9,
            if is_fixed { "—".to_string() } else { format!("{:.2}×", r.work_ratio) },
            r.train_loss,
        );
    }
    out
}

/// One variant as criterion prints a benchmark.
fn render(r: &PaddingResult) -> String {
    let s = &r.epoch_time;
    let x = &r.speedup_over_fixed;
    let pairs = match r.paired_epochs {
        0 => String::new(),
        n => format!(" ({n} epoch pairs)"),
    };
    format!(
        "padding/{:<16} time: [{:.2} s {:.2} s {:.2} s]  speedup over fixed: [{:.2}× {:.2}× {:.2}×]{pairs}\n{:24}{} input positions per epoch ({} targets), train loss {:.4}\n{:24}matrix products: {:.0} GFLOP per epoch, {:.1} GFLOP/s; fixed's ÷ these: {:.2}×",
        r.variant, s.lower, s.mean, s.upper, x.lower, x.point, x.upper, "", r.positions, r.target_tokens, r.train_loss,
        "", r.flops / 1e9, r.flops_per_sec / 1e9, r.work_ratio
    )
}
