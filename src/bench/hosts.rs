//! The bench across hosts: the devices the launcher's allocation or hostfile offers (the
//! default world sizes, and the limit on given ones), and the check, before any configuration
//! runs, that every rank sees the runs directory the bench reads records from.

use super::runner::{Launcher, HOSTFILE, HOST_LIST};
use crate::hosts::RankPlace;
use std::path::Path;

/// The ranks a launcher's allocation or hostfile has room for: one a slot on CPUs, one a GPU on
/// GPUs; `source` says where the number came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub devices: usize,
    pub source: String,
    /// How to get more, for the refusal of a larger world size.
    pub more: &'static str,
}

/// What `launcher` offers, read from Slurm's environment (`env`) for srun, or from its hostfile
/// or host list; `gpus` is the GPUs each host has (those seen here), 0 on CPUs. `None` where it
/// does not say (srun outside an allocation, a launcher on this machine alone).
pub fn offer(
    launcher: &Launcher,
    gpus: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<Offer>> {
    if launcher.is_srun() {
        return Ok(slurm(gpus, env));
    }
    let (hosts, from) = if let Some(file) = launcher.value(&HOSTFILE) {
        let text = std::fs::read_to_string(file).map_err(|e| {
            anyhow::anyhow!(
                "the launcher's hostfile {file:?} cannot be read ({e}): name a hostfile that \
                 exists here, one host a line (`node1:8` or `node1 slots=8`)"
            )
        })?;
        (hostfile(&text), format!("hostfile {file}"))
    } else if let Some(list) = launcher.value(&HOST_LIST) {
        (list.split(',').filter_map(host_slots).collect(), format!("host list {list}"))
    } else {
        return Ok(None);
    };
    anyhow::ensure!(!hosts.is_empty(), "the launcher's {from} names no host: name at least one");
    let per_host = launcher.value(&["-ppn", "--ppn", "-perhost"]).and_then(|n| n.parse().ok());
    let slots: usize = hosts.iter().map(|(_, s)| per_host.unwrap_or(*s)).sum();
    let offer = match gpus {
        0 => Offer {
            devices: slots,
            source: format!("{from}: {} hosts, {slots} slots", hosts.len()),
            more: "add hosts or slots",
        },
        g => Offer {
            devices: hosts.len() * g,
            source: format!("{from}: {} hosts × {g} GPUs (as many as this host sees)", hosts.len()),
            more: "add hosts",
        },
    };
    Ok(Some(offer))
}

/// A host and its slots from a hostfile line or a host-list entry: `node1`, `node1:8` (MPICH),
/// `node1 slots=8` (Open MPI); comments and blank lines give none.
fn host_slots(line: &str) -> Option<(String, usize)> {
    let line = line.split('#').next().unwrap_or("").trim();
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let (host, mut slots) = match first.split_once(':') {
        Some((host, n)) => (host, n.split(':').next()?.parse().ok()?),
        None => (first, 1),
    };
    for w in words {
        if let Some(n) = w.strip_prefix("slots=").and_then(|n| n.parse().ok()) {
            slots = n;
        }
    }
    Some((host.to_string(), slots))
}

/// Every host of a hostfile with its slots, a host named twice counted once with both.
fn hostfile(text: &str) -> Vec<(String, usize)> {
    crate::hosts::tally(text.lines().filter_map(host_slots))
}

/// A Slurm allocation (`SLURM_JOB_ID` set): on GPUs its nodes × GPUs a node
/// (`SLURM_GPUS_PER_NODE`, else the GPUs seen here), no more than its tasks where it has a task
/// count; on CPUs its tasks (`SLURM_NTASKS`), else its CPUs (`SLURM_JOB_CPUS_PER_NODE`).
fn slurm(gpus: usize, env: &dyn Fn(&str) -> Option<String>) -> Option<Offer> {
    let job = env("SLURM_JOB_ID")?;
    let number = |var: &str| env(var).and_then(|v| v.trim().parse::<usize>().ok());
    let nodes = number("SLURM_JOB_NUM_NODES").or_else(|| number("SLURM_NNODES")).unwrap_or(1);
    let tasks = number("SLURM_NTASKS").or_else(|| number("SLURM_NPROCS"));
    let of_nodes = if nodes == 1 { "1 node".to_string() } else { format!("{nodes} nodes") };
    if gpus > 0 {
        let (per, from) = match env("SLURM_GPUS_PER_NODE").as_deref().and_then(gpu_count) {
            Some(per) => (per, "SLURM_GPUS_PER_NODE"),
            None => (gpus, "the GPUs this node sees"),
        };
        let devices = tasks.map_or(nodes * per, |t| t.min(nodes * per));
        let tasks = tasks.map_or(String::new(), |t| format!(", {t} tasks (SLURM_NTASKS)"));
        let source = format!("Slurm job {job}: {of_nodes} × {per} GPUs ({from}){tasks}");
        return Some(Offer { devices, source, more: "ask salloc/sbatch for more nodes or GPUs" });
    }
    if let Some(t) = tasks {
        let source = format!("Slurm job {job}: {t} tasks (SLURM_NTASKS) on {of_nodes}");
        return Some(Offer { devices: t, source, more: "ask salloc/sbatch for more tasks (-n)" });
    }
    let cpus = env("SLURM_JOB_CPUS_PER_NODE")?;
    let devices = cpu_count(&cpus)?;
    let source = format!("Slurm job {job}: {devices} CPUs (SLURM_JOB_CPUS_PER_NODE={cpus})");
    Some(Offer { devices, source, more: "ask salloc/sbatch for more CPUs or tasks (-n)" })
}

/// GPUs a node from `SLURM_GPUS_PER_NODE`: `8`, `a100:8`, `gpu:a100:4,gpu:v100:2` (summed).
fn gpu_count(value: &str) -> Option<usize> {
    value.split(',').map(|item| item.rsplit(':').next()?.trim().parse::<usize>().ok()).sum()
}

/// CPUs of all nodes from `SLURM_JOB_CPUS_PER_NODE`: `72(x2),36` is 180.
fn cpu_count(value: &str) -> Option<usize> {
    value
        .split(',')
        .map(|item| match item.split_once("(x") {
            Some((n, times)) => Some(
                n.trim().parse::<usize>().ok()?
                    * times.trim_end_matches(')').parse::<usize>().ok()?,
            ),
            None => item.trim().parse().ok(),
        })
        .sum()
}

/// Launches `n` ranks of `binary places` with `launcher` and asks each whether it reads the
/// token this process writes into `runs_dir`: where one does not, its host does not see this
/// directory (the records it writes would stay there) and the bench is refused with the fix.
/// Returns every rank's place.
pub fn check_shared(
    launcher: &Launcher,
    binary: &Path,
    runs_dir: &Path,
    n: usize,
) -> anyhow::Result<Vec<RankPlace>> {
    std::fs::create_dir_all(runs_dir)?;
    let expect = format!("{}-{}", crate::hosts::host_name(), std::process::id());
    let token = runs_dir.join(format!(".shared-{expect}"));
    std::fs::write(&token, &expect)?;
    let out = launcher
        .command(n)
        .arg(binary)
        .arg("places")
        .arg("--token")
        .arg(&token)
        .args(["--expect", &expect])
        .output();
    let _ = std::fs::remove_file(&token);
    let out = out.map_err(|e| anyhow::anyhow!("cannot start the launcher: {e}"))?;
    let places: Vec<RankPlace> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(RankPlace::parse).collect();
    anyhow::ensure!(
        out.status.success() && places.len() == n,
        "the launcher did not start {n} ranks ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).lines().collect::<Vec<_>>().join(" | ")
    );
    let blind: Vec<String> = (places.iter())
        .filter(|p| !p.sees)
        .map(|p| format!("rank {} on {}", p.rank, p.host))
        .collect();
    if !blind.is_empty() {
        return Err(crate::UsageError::error(format!(
            "the runs directory {} is not the same directory on every host: {} cannot read the \
             file written there, so their records would never reach this host. Put the bench's \
             output on a filesystem every host mounts at the same path (e.g. \
             CARGO_TARGET_DIR=/shared/you/target cargo bench …)",
            runs_dir.display(),
            blind.join(", ")
        )));
    }
    Ok(places)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    fn offered(spec: &str, gpus: usize, vars: &[(&str, &str)]) -> Option<(usize, String)> {
        let launcher = Launcher::parse(spec).unwrap();
        offer(&launcher, gpus, &env_of(vars)).unwrap().map(|o| (o.devices, o.source))
    }

    #[test]
    fn slurm_offers_its_tasks_on_cpus_and_nodes_times_gpus_on_gpus() {
        let job = [("SLURM_JOB_ID", "77"), ("SLURM_JOB_NUM_NODES", "2"), ("SLURM_NTASKS", "6")];
        let (n, source) = offered("srun", 0, &job).unwrap();
        assert_eq!(n, 6);
        assert!(source.contains("Slurm job 77") && source.contains("SLURM_NTASKS"), "{source}");
        // salloc -N 2 --gpus-per-node 8: no task count, 16 GPUs.
        let gpus =
            [("SLURM_JOB_ID", "8"), ("SLURM_NNODES", "2"), ("SLURM_GPUS_PER_NODE", "h100:8")];
        assert_eq!(offered("srun", 4, &gpus).unwrap().0, 16);
        assert_eq!(offered("srun", 4, &gpus[..2]).unwrap().0, 8, "the GPUs seen here, a node");
        assert_eq!(offered("srun", 8, &job).unwrap().0, 6, "no more than the tasks");
        let cpus = [("SLURM_JOB_ID", "9"), ("SLURM_JOB_CPUS_PER_NODE", "4(x2),2")];
        assert_eq!(offered("srun", 0, &cpus).unwrap().0, 10);
        assert_eq!(offered("srun", 0, &[]), None, "outside an allocation it does not say");
        assert_eq!(offered("mpirun", 0, &job), None, "an MPI launcher alone is this machine");
    }

    #[test]
    fn hostfiles_and_host_lists_offer_their_slots_or_their_hosts_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "# the rack\nnode1:4\nnode2 slots=2 max_slots=4\n\nnode1:1\n")
            .unwrap();
        let spec = format!("mpirun -f {}", file.display());
        let (n, source) = offered(&spec, 0, &[]).unwrap();
        assert_eq!((n, source.ends_with("2 hosts, 7 slots")), (7, true), "{source}");
        assert_eq!(offered(&spec, 8, &[]).unwrap().0, 16, "2 hosts × the 8 GPUs seen here");
        assert_eq!(offered(&format!("mpirun --hostfile={}", file.display()), 0, &[]).unwrap().0, 7);
        let fork = "mpiexec -launcher fork -hosts h1,h2 -ppn 1";
        assert_eq!(offered(fork, 0, &[]).unwrap().0, 2);
        assert_eq!(offered("mpirun --host a:2,b:2", 0, &[]).unwrap().0, 4);
        let gone = Launcher::parse("mpirun -f /no/such/hosts").unwrap();
        let err = offer(&gone, 0, &|_| None).unwrap_err().to_string();
        assert!(err.contains("\"/no/such/hosts\" cannot be read") && err.contains("slots=8"));
    }
}
