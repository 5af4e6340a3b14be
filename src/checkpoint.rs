//! End-of-epoch checkpoints in the run directory, and reading them back for `--resume`.
//!
//! Rank 0 writes the optimiser state (the flat parameters and both AdamW moments, `optim`) once as
//! `checkpoint-epoch{e}.safetensors`, then `checkpoint.json` naming it, each through a temporary
//! file and a rename, and only then deletes the previous epoch's tensors: a crash at any moment
//! leaves one whole checkpoint. RNG state needs no file: dropout is seeded per rank and epoch
//! (`train`), and the data order is the same every epoch (WORKLOAD.md), so the epoch number is
//! the whole data position.

use crate::metrics;
use crate::optim::AdamWState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint.json";
const SCHEMA: u32 = 1;

/// `checkpoint.json`: which epoch the saved state ends, and where its tensors are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub schema: u32,
    /// The last completed epoch; a resumed run starts at the next.
    pub epoch: usize,
    pub optimizer_steps: u64,
    /// File name of the tensors, in the same directory.
    pub tensors: String,
    /// `param_checksum` of the saved parameters, checked again on loading.
    pub param_checksum: f64,
    pub written: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint in {dir} is unusable ({reason}): run without --resume and with --overwrite to start over")]
    Corrupt { dir: PathBuf, reason: String },
    #[error("writing a checkpoint into {dir}: {reason}")]
    Write { dir: PathBuf, reason: String },
}

fn tensors_name(epoch: usize) -> String {
    format!("checkpoint-epoch{epoch}.safetensors")
}

/// Saves the state at the end of `epoch` (rank 0 only).
pub(crate) fn save(
    dir: &Path,
    epoch: usize,
    state: &AdamWState,
    param_checksum: f64,
) -> Result<(), CheckpointError> {
    let err = |reason: String| CheckpointError::Write { dir: dir.to_path_buf(), reason };
    let name = tensors_name(epoch);
    // The temporary keeps the .safetensors extension, which selects the format.
    let tmp = dir.join(format!(".{}.{name}", std::process::id()));
    let named: Vec<(&str, &Tensor)> = state.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| err(e.to_string()))?;
    let info = CheckpointInfo {
        schema: SCHEMA,
        epoch,
        optimizer_steps: state.steps,
        tensors: name.clone(),
        param_checksum,
        written: chrono::Utc::now().to_rfc3339(),
    };
    metrics::write_json(&dir.join(CHECKPOINT_FILE), &info).map_err(|e| err(e.to_string()))?;
    // Only now is the previous checkpoint no longer needed.
    for entry in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if is_tensors_file(&other) && other != name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// `checkpoint.json` of `dir`, if there is one.
pub(crate) fn read_info(dir: &Path) -> Result<Option<CheckpointInfo>, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt { dir: dir.to_path_buf(), reason };
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
    let info: CheckpointInfo =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
    if info.schema != SCHEMA {
        return Err(corrupt(format!("{CHECKPOINT_FILE} has schema {}", info.schema)));
    }
    Ok(Some(info))
}

/// The saved state `info` names, checked to hold `numel` parameters.
pub fn load(
    dir: &Path,
    info: &CheckpointInfo,
    numel: usize,
) -> Result<AdamWState, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt { dir: dir.to_path_buf(), reason };
    let path = dir.join(&info.tensors);
    let tensors =
        Tensor::read_safetensors(&path).map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
    if let Some((name, t)) = tensors.iter().find(|(_, t)| t.numel() != numel) {
        return Err(corrupt(format!(
            "{name} has {} values, this model has {numel} parameters",
            t.numel()
        )));
    }
    Ok(AdamWState { tensors, steps: info.optimizer_steps })
}

/// Removes the checkpoint files of an earlier run, so that `--resume` can never continue from a
/// run that this one replaced.
pub fn clear(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == CHECKPOINT_FILE || is_tensors_file(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn is_tensors_file(name: &str) -> bool {
    name.starts_with("checkpoint-epoch") && name.ends_with(".safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn state(fill: f64) -> AdamWState {
        let t = |v: f64| Tensor::full([4], v, (Kind::Float, Device::Cpu));
        AdamWState {
            tensors: vec![
                ("params".into(), t(fill)),
                ("exp_avg".into(), t(0.5)),
                ("exp_avg_sq".into(), t(0.25)),
            ],
            steps: 9,
        }
    }

    #[test]
    fn saves_loads_and_keeps_one_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_info(dir.path()).unwrap().is_none());
        save(dir.path(), 0, &state(1.0), 4.0).unwrap();
        save(dir.path(), 1, &state(2.0), 8.0).unwrap();
        let info = read_info(dir.path()).unwrap().unwrap();
        let loaded = load(dir.path(), &info, 4).unwrap();
        assert_eq!((info.epoch, info.optimizer_steps, info.param_checksum), (1, 9, 8.0));
        let params = loaded.tensors.iter().find(|(n, _)| n == "params").unwrap();
        assert!(params.1.equal(&state(2.0).tensors[0].1));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["checkpoint-epoch1.safetensors", "checkpoint.json"]);
        assert!(matches!(load(dir.path(), &info, 5), Err(CheckpointError::Corrupt { .. })));
        clear(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_checksum_reads_back_bit_for_bit() {
        // A checksum a bench run wrote, which JSON parsing without correct rounding read back
        // one ulp off, so that --resume refused the checkpoint; and a few random ones.
        let dir = tempfile::tempdir().unwrap();
        let mut sums = vec![1154.8527669347877_f64, 999.0975451232708, -0.1, 1e-300];
        sums.extend((1..200u64).map(|i| (i * 2654435761 % 1_000_003) as f64 / 997.0 + 1000.0));
        for sum in sums {
            save(dir.path(), 0, &state(1.0), sum).unwrap();
            let back = read_info(dir.path()).unwrap().unwrap().param_checksum;
            assert_eq!(back.to_bits(), sum.to_bits(), "{sum:?} came back as {back:?}");
        }
    }

    #[test]
    fn truncated_tensors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 3, &state(1.0), 4.0).unwrap();
        let file = dir.path().join(tensors_name(3));
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let info = read_info(dir.path()).unwrap().unwrap();
        let err = load(dir.path(), &info, 4).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint-epoch3.safetensors") && err.contains("--overwrite"),
            "{err}"
        );
    }
}
