//! The subcommands that work on files rather than train: `compare` (the benchmark analysis on
//! existing run directories), `bleu` (sacreBLEU's corpus score) and `translate` (greedy
//! translation with a trained run's weights), and the hidden `watch` (the fault sentinel). Bad input is a `UsageError` (exit status 2).

use crate::cli::{BleuArgs, Cmd, CompareArgs, ExportArgs, TranslateArgs, WatchArgs};
use crate::data::corpus::read_lines;
use crate::data::Example;
use crate::data::Tokenizer;
use crate::eval::{bleu, prompt};
use crate::metrics::{RunInfo, RUN_FILE};
use crate::model::{greedy_decode, Gpt, GptConfig};
use crate::UsageError;
use anyhow::Context;
use std::io::{BufRead, Write};
use std::path::Path;

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Compare(args) => compare(&args),
        Cmd::Bleu(args) => bleu_cmd(&args),
        Cmd::Translate(args) => translate(&args),
        Cmd::Watch(args) => watch(&args),
        Cmd::ExportExamples(args) => export_examples(&args),
        Cmd::Places(args) => crate::hosts::places_main(&args.token, &args.expect),
    }
}

/// `dp-bench compare`: the benchmark's analysis and reports on existing run directories.
fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    use crate::bench::{analysis, report, run_data, summary::Summary};
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(UsageError::error("--confidence must be between 0 and 1, e.g. 0.95"));
    }
    if let Some(doc) = &args.update_doc {
        report::markdown::check_doc(doc, report::markdown::DocTable::DATA_PARALLEL)
            .map_err(UsageError::from_err)?;
    }
    let mut runs = args
        .dirs
        .iter()
        .map(|d| run_data::RunData::load(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError::from_err)?;
    for label in &args.label {
        let (dir, name) = label
            .split_once('=')
            .filter(|(d, n)| !d.is_empty() && !n.trim().is_empty())
            .ok_or_else(|| UsageError::error(format!("--label {label:?}: write it as DIR=NAME")))?;
        let same = |d: &Path| {
            d == Path::new(dir) || (d.canonicalize().ok() == Path::new(dir).canonicalize().ok())
        };
        let run = runs.iter_mut().find(|r| same(&r.dir)).ok_or_else(|| {
            UsageError::error(format!(
                "--label {label:?}: {dir} is not one of the run directories given"
            ))
        })?;
        run.label = Some(name.trim().to_string());
    }
    if runs.iter().any(|r| r.dir == args.out) {
        return Err(UsageError::error(format!(
            "--out {}: that is one of the run directories compared: write the report elsewhere",
            args.out.display()
        )));
    }
    if crate::metrics::is_run_dir(&args.out) {
        return Err(UsageError::error(format!(
            "--out {}: that is a run directory: write the report elsewhere",
            args.out.display()
        )));
    }
    let summary =
        analysis::analyse(&runs, args.warmup, args.confidence).map_err(UsageError::from_err)?;
    for note in analysis::notes(&runs, &summary) {
        eprintln!("note: {note}");
    }
    let baseline = match &args.baseline {
        Some(path) => Some(Summary::read(path).map_err(UsageError::from_err)?),
        None => None,
    };
    let name = args.baseline.as_ref().map(|p| p.display().to_string());
    let publish = report::Publish {
        baseline: name.as_deref().zip(baseline.as_ref()),
        outputs: report::Outputs { dir: args.out.clone(), figures: args.out.join("figures") },
        update_doc: args.update_doc.as_deref(),
    };
    let (_, changes) = report::publish(&summary, &publish)?;
    if args.fail_on_regression {
        report::fail_on_regression(&changes, name.as_deref().unwrap_or("baseline"))?;
    }
    Ok(())
}

/// `dp-bench bleu`: prints what `sacrebleu REF… < HYP` prints (`-f text`), or its JSON.
fn bleu_cmd(args: &BleuArgs) -> anyhow::Result<()> {
    let hyps = read_lines(&args.hyp).map_err(UsageError::from_err)?;
    if hyps.is_empty() {
        // sacreBLEU refuses an empty test set too ("empty test set").
        return Err(UsageError::error(format!(
            "{}: an empty test set has no BLEU: give one hypothesis a line",
            args.hyp.display()
        )));
    }
    let mut refs = Vec::with_capacity(args.refs.len());
    for path in &args.refs {
        let lines = read_lines(path).map_err(UsageError::from_err)?;
        if lines.len() != hyps.len() {
            return Err(UsageError::error(format!(
                "{} has {} lines but {} has {}: hypotheses and references must be line-aligned",
                args.hyp.display(),
                hyps.len(),
                path.display(),
                lines.len()
            )));
        }
        refs.push(lines);
    }
    let score = bleu::corpus_bleu_multi(&hyps, &refs);
    let signature = bleu::signature(refs.len());
    // As sacreBLEU writes it: `width` decimals, correctly rounded (in JSON, that text as a number).
    let shown = format!("{:.*}", args.width, score.score);
    if args.json {
        let json = serde_json::json!({
            "name": "BLEU",
            "score": shown.parse::<f64>().expect("a formatted number"),
            "signature": signature,
            "verbose_score": score.verbose(),
            "nrefs": refs.len().to_string(),
            "case": "mixed",
            "eff": "no",
            "tok": "13a",
            "smooth": "exp",
            "version": format!("dp-bench-{}", env!("CARGO_PKG_VERSION")),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("BLEU|{signature} = {shown} {}", score.verbose());
    }
    Ok(())
}

/// Sentences translated together.
const TRANSLATE_BATCH: usize = 32;

/// The `run.json` of the run directory `dir`, or a usage error naming it.
fn read_run_info(dir: &Path) -> anyhow::Result<RunInfo> {
    let run_file = dir.join(RUN_FILE);
    let bytes = std::fs::read(&run_file).map_err(|e| {
        UsageError::error(format!(
            "{}: {e}: pass the --workdir of a finished training run",
            run_file.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        UsageError::error(format!("{}: not a dp-bench run.json ({e})", run_file.display()))
    })
}

/// `dp-bench export-examples`: a run's tokenised training examples as JSON, for the PyTorch
/// reference (`scripts/torch_reference.py`) to train on exactly the same token ids.
fn export_examples(args: &ExportArgs) -> anyhow::Result<()> {
    let info = read_run_info(&args.workdir)?;
    let corpus = crate::data::load_corpus(&info.config).map_err(UsageError::from_err)?;
    let tok = Tokenizer::load(&Tokenizer::path_in(&args.workdir)).map_err(UsageError::from_err)?;
    let max_len = info.config.model_max_length;
    let examples: Vec<serde_json::Value> = corpus
        .train
        .iter()
        .map(|p| {
            let e = Example::encode(&tok, p, max_len);
            serde_json::json!({ "ids": e.ids, "prompt_len": e.prompt_len })
        })
        .collect();
    crate::metrics::refuse_run_output(&args.out, "--out")?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        return Err(UsageError::error(format!(
            "--out {}: the folder {} does not exist: create it first",
            args.out.display(),
            parent.display()
        )));
    }
    let out = serde_json::json!({
        "vocab_size": tok.vocab_size(),
        "pad": tok.pad,
        "model_max_length": max_len,
        "examples": examples,
    });
    crate::metrics::write_json(&args.out, &out)
}

/// `dp-bench translate`: German lines on stdin, English lines on stdout.
fn translate(args: &TranslateArgs) -> anyhow::Result<()> {
    let dir = &args.workdir;
    let info = read_run_info(dir)?;
    let tok = Tokenizer::load(&Tokenizer::path_in(dir)).map_err(UsageError::from_err)?;
    let weights = args.checkpoint.clone().unwrap_or_else(|| dir.join(crate::run::MODEL_FILE));
    tch::set_num_threads(args.threads.max(1) as i32);
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let config = GptConfig {
        matmul: info.config.cpu_matmul,
        ..GptConfig::new(info.dims, info.vocab_size as i64, 0.0)
    };
    let model = Gpt::new(&vs.root(), config);
    load_weights(&mut vs, &weights, &info)?;
    let max_len = info.config.model_max_length;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let lines: Vec<String> = stdin.lock().lines().collect::<Result<_, _>>().map_err(|e| {
        UsageError::error(format!(
            "stdin: {e}: translate reads German sentences as UTF-8 text, one a line"
        ))
    })?;
    for chunk in lines.chunks(TRANSLATE_BATCH) {
        let prompts: Vec<Vec<i64>> = chunk.iter().map(|l| prompt(&tok, l, max_len)).collect();
        for ids in greedy_decode(&model, &prompts, tok.eos_en, tok.pad, max_len) {
            writeln!(out, "{}", tok.decode(&ids))?;
        }
    }
    Ok(())
}

/// Loads `weights` into `vs`: final weights (`model.safetensors`, by name), or a training
/// checkpoint (`checkpoint-epoch*.safetensors`: the flat `params` in the order of the model's
/// trainable variables). Weights of another model are refused with the file named.
fn load_weights(vs: &mut tch::nn::VarStore, weights: &Path, info: &RunInfo) -> anyhow::Result<()> {
    let refuse = |why: String| {
        UsageError::error(format!(
            "{}: {why}: pass this run's model.safetensors or one of its \
             checkpoint-epoch*.safetensors",
            weights.display()
        ))
    };
    let tensors = tch::Tensor::read_safetensors(weights)
        .map_err(|e| refuse(format!("cannot read weights ({e})")))?;
    let count = crate::model::gpt::parameter_count(vs);
    let vars = vs.trainable_variables();
    let Some((_, flat)) = tensors.iter().find(|(n, _)| n == "params") else {
        return vs.load(weights).map_err(|e| {
            refuse(format!(
                "weights of another model, not this run's (preset {}; {e})",
                info.config.preset
            ))
        });
    };
    if flat.numel() as i64 != count {
        return Err(refuse(format!(
            "a checkpoint of {} parameters, and this run's model (preset {}) has {count}",
            flat.numel(),
            info.config.preset
        )));
    }
    let _guard = tch::no_grad_guard();
    let mut start = 0;
    for mut v in vars {
        let n = v.numel() as i64;
        v.copy_(&flat.narrow(0, start, n).view_as(&v));
        start += n;
    }
    Ok(())
}

fn watch(args: &WatchArgs) -> anyhow::Result<()> {
    let ranks = args
        .ranks
        .split(',')
        .map(|pair| {
            let (rank, pid) = pair.split_once(':').context("rank:pid")?;
            Ok(crate::fault::Watched { rank: rank.parse()?, pid: pid.parse()? })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::fault::sentinel(&args.workdir, &args.host, &ranks)
}
