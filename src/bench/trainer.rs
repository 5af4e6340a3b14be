//! The user's own training command as the bench's configurations (`--trainer 'CMD'`): one run
//! per world size, one after another (a foreign trainer has no epoch gates), each launching
//! its own processes. The command's placeholders are filled in per configuration; what it
//! writes (its `--trainer-dir`, or the `{workdir}` it was given) is moved into the
//! configuration's run directory, which the analysis then reads as any foreign run
//! (`records::Foreign`). A command that fails, or writes no records, fails its configuration
//! with its last lines of output; the others go on.

use super::records::{TrainerInfo, TRAINER_FILE};
use super::run_data::RunData;
use indicatif::ProgressBar;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The placeholders a training command may use.
pub const PLACEHOLDERS: [&str; 5] =
    ["{world_size}", "{batch_size}", "{per_device_batch}", "{epochs}", "{workdir}"];

/// Lines of a failed command's output shown with its failure.
const TAIL_LINES: usize = 15;

/// The command's output, kept in each run directory.
const LOG_FILE: &str = "trainer.log";

/// One configuration of the user's command.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerRun {
    pub id: String,
    pub world_size: usize,
    pub global_batch: usize,
    pub epochs: usize,
}

impl TrainerRun {
    /// `template` with this configuration's values; `workdir` where its records go.
    pub fn command(&self, template: &str, workdir: &Path) -> String {
        let values = [
            self.world_size.to_string(),
            self.global_batch.to_string(),
            (self.global_batch / self.world_size).to_string(),
            self.epochs.to_string(),
            shell_quote(&workdir.display().to_string()),
        ];
        PLACEHOLDERS.iter().zip(values).fold(template.to_string(), |c, (p, v)| c.replace(p, &v))
    }
}

/// `s` as one word for `sh`.
fn shell_quote(s: &str) -> String {
    match s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

/// Refuses a command that cannot give one run per world size: one that ignores the world size,
/// or names a placeholder that does not exist (a typo would reach the trainer as text).
pub fn check_command(template: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!template.trim().is_empty(), "--trainer is empty: give the training command");
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map(|e| start + e + 1);
        let word = &rest[start..end.unwrap_or(rest.len())];
        anyhow::ensure!(
            end.is_some() && PLACEHOLDERS.contains(&word),
            "--trainer: {word:?} is not a placeholder; the command may use {}",
            PLACEHOLDERS.join(", ")
        );
        rest = &rest[end.expect("checked")..];
    }
    anyhow::ensure!(
        template.contains("{world_size}"),
        "--trainer must pass {{world_size}} to the command (e.g. `--world_size {{world_size}}`): \
         otherwise every configuration trains the same way"
    );
    Ok(())
}

/// Refuses a `--trainer-dir` that holds anything: the bench moves what the command writes
/// there into the run directory, and must never move or mix a user's own files.
pub fn check_trainer_dir(dir: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    anyhow::ensure!(
        entries.next().is_none(),
        "--trainer-dir {} is not empty: move its files elsewhere first (the bench moves \
         everything the command writes there into its run directory, and will not mix your \
         files with a run's)",
        dir.display()
    );
    Ok(())
}

/// Runs each configuration in turn: the runs that finished and the ids of those that failed.
pub fn run_all(
    template: &str,
    trainer_dir: Option<&Path>,
    (plan, runs_dir): (&[TrainerRun], &Path),
    bar: &ProgressBar,
) -> (Vec<RunData>, Vec<String>) {
    let (mut runs, mut failures) = (Vec::new(), Vec::new());
    for p in plan {
        bar.set_prefix(p.id.clone());
        let done = bar.position();
        match run_one(template, trainer_dir, p, runs_dir, bar) {
            Ok(run) => runs.push(run),
            Err(e) => {
                bar.suspend(|| eprintln!("data_parallel/{}: FAILED: {e:#}", p.id));
                failures.push(p.id.clone());
            }
        }
        bar.set_position(done + p.epochs as u64);
    }
    (runs, failures)
}

fn run_one(
    template: &str,
    trainer_dir: Option<&Path>,
    p: &TrainerRun,
    runs_dir: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<RunData> {
    let run_dir = runs_dir.join(&p.id);
    // The bench's own directory: the previous bench's run of this configuration goes.
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    std::fs::create_dir_all(&run_dir)?;
    let writes: PathBuf = trainer_dir.map_or_else(|| run_dir.clone(), Path::to_path_buf);
    if trainer_dir.is_some() {
        check_trainer_dir(&writes)?;
    }
    let existed = writes.exists();
    let command = p.command(template, &run_dir);
    let log = run_dir.join(LOG_FILE);
    let status = spawn_and_follow(&command, &writes, &log, p, bar)?;
    if writes != run_dir {
        move_contents(&writes, &run_dir)?;
        if !existed {
            let _ = std::fs::remove_dir(&writes);
        }
    }
    let tail = || tail_of(&log);
    anyhow::ensure!(
        status.success(),
        "`{command}` exited with {status}; its last lines:\n{}",
        tail()
    );
    let info = TrainerInfo {
        command,
        world_size: p.world_size,
        global_batch_size: p.global_batch,
        epochs: p.epochs,
    };
    crate::metrics::write_json(&run_dir.join(TRAINER_FILE), &info)?;
    RunData::load(&run_dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(the command wrote into {}; its last lines:\n{})",
            writes.display(),
            tail()
        )
    })
}

/// Runs `command` through `sh`, its output into `log`, moving the bar as rank 0's epoch
/// records appear in `writes`.
fn spawn_and_follow(
    command: &str,
    writes: &Path,
    log: &Path,
    p: &TrainerRun,
    bar: &ProgressBar,
) -> anyhow::Result<std::process::ExitStatus> {
    let out = std::fs::File::create(log)?;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start `sh -c {command}`: {e}"))?;
    let start = bar.position();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let epochs = std::fs::read_dir(writes).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    crate::metrics::EpochRecord::rank_epoch(&name).is_some_and(|(r, _)| r == 0)
                })
                .count()
        });
        bar.set_position(start + epochs.min(p.epochs) as u64);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Moves every entry of `from` into `to` (a rename; a copy where they are on different file
/// systems). Refuses to replace anything in `to`.
fn move_contents(from: &Path, to: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let target = to.join(entry.file_name());
        anyhow::ensure!(
            !target.exists(),
            "{} is in the run directory already; left {} where the command wrote it",
            target.display(),
            entry.path().display()
        );
        if std::fs::rename(entry.path(), &target).is_err() {
            copy_tree(&entry.path(), &target)?;
            match entry.file_type()?.is_dir() {
                true => std::fs::remove_dir_all(entry.path())?,
                false => std::fs::remove_file(entry.path())?,
            }
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

/// The last lines of a command's output.
fn tail_of(log: &Path) -> String {
    let Ok(file) = std::fs::File::open(log) else {
        return "(no output)".into();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    match tail.is_empty() {
        true => "(no output)".into(),
        false => tail.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        let p = TrainerRun { id: "ws2_bs64".into(), world_size: 2, global_batch: 64, epochs: 5 };
        let t =
            "train --world_size {world_size} --batch_size {batch_size} --per {per_device_batch} \
                 --n_epochs {epochs} --out {workdir}";
        check_command(t).unwrap();
        assert_eq!(
            p.command(t, Path::new("/runs/my dir")),
            "train --world_size 2 --batch_size 64 --per 32 --n_epochs 5 --out '/runs/my dir'"
        );
        let e = check_command("train --ws {world_size} --bs {batch}").unwrap_err().to_string();
        assert!(e.contains("\"{batch}\" is not a placeholder"), "{e}");
        let e = check_command("train --bs {batch_size}").unwrap_err().to_string();
        assert!(e.contains("{world_size}"), "{e}");
        assert!(check_command("train {world_size").is_err());
    }

    #[test]
    fn a_trainer_dir_with_files_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        check_trainer_dir(&dir.path().join("absent")).unwrap();
        check_trainer_dir(dir.path()).unwrap();
        std::fs::write(dir.path().join("mine.txt"), "x").unwrap();
        let e = check_trainer_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not empty") && e.contains(&dir.path().display().to_string()), "{e}");
        assert!(dir.path().join("mine.txt").exists());
    }
}
