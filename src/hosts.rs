//! Where the ranks of one launch sit: each rank's host, its MPI node (the ranks that share its
//! memory, named by the lowest world rank among them) and whether it sees a file that the
//! launching machine wrote. `dp-bench places` reports it, one line a rank; the bench asks before
//! it runs configurations across hosts (`bench::hosts`), and every run records its ranks' hosts
//! and nodes in run.json.

use crate::dist::Communicator;
use crate::run::HostPlace;
use mpi::topology::Communicator as _;
use std::path::Path;

/// One rank's place, as `dp-bench places` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankPlace {
    pub rank: usize,
    pub host: String,
    /// The lowest world rank among the ranks that share this rank's memory.
    pub node: usize,
    /// Whether the token file held the expected text, as this rank read it.
    pub sees: bool,
}

const TAG: &str = "place";

impl RankPlace {
    pub fn line(&self) -> String {
        format!("{TAG}\t{}\t{}\t{}\t{}", self.rank, self.host, self.node, u8::from(self.sees))
    }

    /// A line of [`RankPlace::line`]; `None` for any other line.
    pub fn parse(line: &str) -> Option<RankPlace> {
        let mut words = line.trim_end().split('\t');
        (words.next()? == TAG).then_some(())?;
        let rank = words.next()?.parse().ok()?;
        let host = words.next()?.to_string();
        let node = words.next()?.parse().ok()?;
        let sees = words.next()? == "1";
        Some(RankPlace { rank, host, node, sees })
    }
}

/// This host's name.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// This rank's place among the ranks of `world` that share its memory (its host, as MPI sees
/// it). Collective.
pub fn host_place(world: &mpi::topology::SimpleCommunicator) -> HostPlace {
    use mpi::collective::CommunicatorCollectives;
    let host_comm = world.split_shared(0);
    let mut host_ranks = vec![0u64; host_comm.size() as usize];
    host_comm.all_gather_into(&(world.rank() as u64), &mut host_ranks[..]);
    HostPlace {
        local_rank: host_comm.rank() as usize,
        host_ranks: host_ranks.into_iter().map(|r| r as usize).collect(),
    }
}

/// Every rank's place, by rank, on every rank: its host, node, and whether `token` holds
/// `expect`. Collective.
pub fn gather(
    comm: &dyn Communicator,
    place: &HostPlace,
    token: &Path,
    expect: &str,
) -> Vec<RankPlace> {
    let sees = std::fs::read_to_string(token).is_ok_and(|t| t.trim() == expect);
    let mine = RankPlace { rank: comm.rank(), host: host_name(), node: place.host_ranks[0], sees };
    comm.all_gather_bytes(mine.line().as_bytes())
        .iter()
        .map(|b| RankPlace::parse(&String::from_utf8_lossy(b)).expect("a rank's place line"))
        .collect()
}

/// The ranks on each node, nodes in the order of their first rank, from each rank's node
/// (`nodes`) or, where a run did not record them, its host name. Nodes are told apart by MPI
/// (the ranks that share memory), so MPI's test hosts on one machine (`mpiexec -launcher fork
/// -hosts a,b`) count as two.
pub fn ranks_per_node(hosts: &[String], nodes: Option<&[usize]>) -> Vec<usize> {
    let counts = match nodes {
        Some(nodes) => tally(nodes.iter().map(|&n| (n.to_string(), 1))),
        None => tally(hosts.iter().map(|h| (h.clone(), 1))),
    };
    counts.into_iter().map(|(_, n)| n).collect()
}

/// `(key, count)` pairs summed by key, the keys in the order they first appear.
pub fn tally<K: PartialEq>(items: impl IntoIterator<Item = (K, usize)>) -> Vec<(K, usize)> {
    let mut sums: Vec<(K, usize)> = Vec::new();
    for (key, n) in items {
        match sums.iter_mut().find(|(k, _)| *k == key) {
            Some((_, sum)) => *sum += n,
            None => sums.push((key, n)),
        }
    }
    sums
}

/// Ranks per node ([`ranks_per_node`]) in words: "1 node", "2 nodes × 4 ranks", "3 nodes:
/// 2 + 1 + 1 ranks".
pub fn describe(counts: &[usize]) -> String {
    let ranks = |n: usize| if n == 1 { "1 rank".to_string() } else { format!("{n} ranks") };
    match counts {
        [] | [_] => "1 node".into(),
        [first, rest @ ..] if rest.iter().all(|n| n == first) => {
            format!("{} nodes × {}", counts.len(), ranks(*first))
        }
        _ => {
            let each: Vec<String> = counts.iter().map(usize::to_string).collect();
            format!("{} nodes: {} ranks", counts.len(), each.join(" + "))
        }
    }
}

/// `dp-bench places --token FILE --expect TEXT`: rank 0 prints every rank's [`RankPlace`] line.
pub fn places_main(token: &Path, expect: &str) -> anyhow::Result<()> {
    let universe =
        mpi::initialize().ok_or_else(|| anyhow::anyhow!("MPI was already initialised"))?;
    let world = universe.world();
    let place = host_place(&world);
    let comm = crate::dist::Mpi { world };
    let places = gather(&comm, &place, token, expect);
    if comm.rank() == 0 {
        for p in places {
            println!("{}", p.line());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_line_reads_back_and_placements_are_described_by_node() {
        let p = RankPlace { rank: 3, host: "gpu-node-7".into(), node: 2, sees: true };
        assert_eq!(RankPlace::parse(&p.line()), Some(p));
        assert_eq!(RankPlace::parse("epoch 1/3: 2.0 s"), None);
        let hosts = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let said = |h: &[String], n: Option<&[usize]>| describe(&ranks_per_node(h, n));
        assert_eq!(said(&hosts(&["a", "a"]), None), "1 node");
        assert_eq!(said(&hosts(&["a", "b"]), None), "2 nodes × 1 rank");
        // MPI's test hosts on one machine: one host name, two nodes.
        assert_eq!(said(&hosts(&["a", "a"]), Some(&[0, 1])), "2 nodes × 1 rank");
        let four = hosts(&["a", "a", "b", "b"]);
        assert_eq!(said(&four, Some(&[0, 0, 2, 2])), "2 nodes × 2 ranks");
        assert_eq!(said(&four[..3], Some(&[0, 0, 2])), "2 nodes: 2 + 1 ranks");
        assert_eq!(said(&[], None), "1 node");
    }
}
