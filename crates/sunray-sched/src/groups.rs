//! Placement groups: where the bundles of a group go, all or none, under Ray's four
//! strategies. Pure planning over what each node has free; the scheduler takes the
//! resources once a plan exists.

use std::collections::BTreeMap;

use crate::resources::ResourceSet;
use crate::scheduler::NodeId;

/// Ray's placement strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// As few nodes as possible (one if it fits).
    Pack,
    /// As many nodes as possible (one bundle each while there are nodes).
    Spread,
    /// All bundles on one node, or wait.
    StrictPack,
    /// Every bundle on its own node, or wait.
    StrictSpread,
}

/// A node for each bundle (in bundle order), or None if `free` cannot hold them now.
pub fn plan(
    bundles: &[ResourceSet],
    strategy: Strategy,
    free: &BTreeMap<NodeId, ResourceSet>,
) -> Option<Vec<NodeId>> {
    // Largest bundles first (by GPU, then CPU): they have the fewest places to go.
    let mut order: Vec<usize> = (0..bundles.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((bundles[i].gpu, bundles[i].cpu)));
    match strategy {
        Strategy::StrictPack => {
            let total = bundles
                .iter()
                .fold(ResourceSet::default(), |t, b| t.plus(b));
            let node = *free.iter().find(|(_, f)| total.fits_in(f))?.0;
            Some(vec![node; bundles.len()])
        }
        Strategy::StrictSpread => {
            let mut chosen = vec![0; bundles.len()];
            spread_distinct(bundles, &order, free, &mut Vec::new(), &mut chosen).then_some(chosen)
        }
        Strategy::Pack => plan(bundles, Strategy::StrictPack, free)
            .or_else(|| greedy(bundles, &order, free, &BTreeMap::new(), true)),
        Strategy::Spread => plan(bundles, Strategy::StrictSpread, free)
            .or_else(|| greedy(bundles, &order, free, &BTreeMap::new(), false)),
    }
}

/// A node for each of the bundles `lost` (in that order) of a group whose other bundles
/// stay on the nodes `kept` (their node left the cluster; Ray reschedules them): strict
/// spread keeps every bundle on its own node, strict pack on the node of the others,
/// pack prefers the nodes the group still uses, spread the ones it does not.
pub fn plan_lost(
    bundles: &[ResourceSet],
    lost: &[usize],
    strategy: Strategy,
    kept: &[NodeId],
    free: &BTreeMap<NodeId, ResourceSet>,
) -> Option<Vec<NodeId>> {
    let wanted: Vec<ResourceSet> = lost.iter().map(|&i| bundles[i].clone()).collect();
    if kept.is_empty() {
        return plan(&wanted, strategy, free);
    }
    let elsewhere: BTreeMap<NodeId, ResourceSet> = free
        .iter()
        .filter(|(n, _)| !kept.contains(n))
        .map(|(n, f)| (*n, f.clone()))
        .collect();
    let mut used: BTreeMap<NodeId, usize> = BTreeMap::new();
    for n in kept {
        *used.entry(*n).or_default() += 1;
    }
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((wanted[i].gpu, wanted[i].cpu)));
    match strategy {
        Strategy::StrictPack => {
            let node = kept[0];
            let total = wanted.iter().fold(ResourceSet::default(), |t, b| t.plus(b));
            total
                .fits_in(free.get(&node)?)
                .then(|| vec![node; wanted.len()])
        }
        Strategy::StrictSpread => plan(&wanted, Strategy::StrictSpread, &elsewhere),
        Strategy::Pack => greedy(&wanted, &order, free, &used, true),
        Strategy::Spread => plan(&wanted, Strategy::StrictSpread, &elsewhere)
            .or_else(|| greedy(&wanted, &order, free, &used, false)),
    }
}

/// Bundles one at a time: `pack` prefers the node the group already uses most (then
/// the fullest), otherwise the node it uses least (then the emptiest); `used` counts
/// the group's bundles already on each node.
fn greedy(
    bundles: &[ResourceSet],
    order: &[usize],
    free: &BTreeMap<NodeId, ResourceSet>,
    used: &BTreeMap<NodeId, usize>,
    pack: bool,
) -> Option<Vec<NodeId>> {
    let mut left = free.clone();
    let mut chosen = vec![0; bundles.len()];
    let mut used = used.clone();
    for &i in order {
        let fits = left.iter().filter(|(_, f)| bundles[i].fits_in(f));
        let key = |(n, f): &(&NodeId, &ResourceSet)| {
            (used.get(*n).copied().unwrap_or(0), std::cmp::Reverse(f.cpu))
        };
        let node = match pack {
            true => fits.max_by_key(key),
            false => fits.min_by_key(key),
        }
        .map(|(n, _)| *n)?;
        left.get_mut(&node).expect("a free node").take(&bundles[i]);
        *used.entry(node).or_default() += 1;
        chosen[i] = node;
    }
    Some(chosen)
}

/// Puts `order[k..]` on distinct nodes not in `taken` (backtracking: a greedy choice
/// can block a later, larger bundle).
fn spread_distinct(
    bundles: &[ResourceSet],
    order: &[usize],
    free: &BTreeMap<NodeId, ResourceSet>,
    taken: &mut Vec<NodeId>,
    chosen: &mut [NodeId],
) -> bool {
    let Some((&i, rest)) = order.split_first() else {
        return true;
    };
    let candidates: Vec<NodeId> = free
        .iter()
        .filter(|(n, f)| !taken.contains(n) && bundles[i].fits_in(f))
        .map(|(n, _)| *n)
        .collect();
    for n in candidates {
        taken.push(n);
        chosen[i] = n;
        if spread_distinct(bundles, rest, free, taken, chosen) {
            return true;
        }
        taken.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(n: f64) -> ResourceSet {
        ResourceSet::cpus(n)
    }

    fn nodes(cpus: &[f64]) -> BTreeMap<NodeId, ResourceSet> {
        cpus.iter()
            .enumerate()
            .map(|(i, c)| (i as NodeId + 1, cpu(*c)))
            .collect()
    }

    #[test]
    fn each_strategy_places_as_ray_does() {
        let free = nodes(&[4.0, 4.0, 4.0]);
        let b = vec![cpu(1.0); 3];
        assert_eq!(plan(&b, Strategy::Pack, &free), Some(vec![1, 1, 1]));
        assert_eq!(plan(&b, Strategy::StrictPack, &free), Some(vec![1, 1, 1]));
        let mut s = plan(&b, Strategy::Spread, &free).unwrap();
        s.sort();
        assert_eq!(s, vec![1, 2, 3]);
        let mut s = plan(&b, Strategy::StrictSpread, &free).unwrap();
        s.sort();
        assert_eq!(s, vec![1, 2, 3]);
        // Four bundles on three nodes: spread doubles up, strict spread waits.
        let b4 = vec![cpu(1.0); 4];
        assert!(plan(&b4, Strategy::StrictSpread, &free).is_none());
        let s = plan(&b4, Strategy::Spread, &free).unwrap();
        let distinct: std::collections::BTreeSet<_> = s.iter().collect();
        assert_eq!(distinct.len(), 3);
        // Too big for one node: pack spills over, strict pack waits.
        let big = vec![cpu(3.0), cpu(3.0)];
        assert!(plan(&big, Strategy::StrictPack, &free).is_none());
        let p = plan(&big, Strategy::Pack, &free).unwrap();
        assert_ne!(p[0], p[1]);
    }

    /// Node 2 of a group's three left: its bundle goes where the strategy wants it
    /// next to the bundles that stayed on nodes 1 and 3.
    #[test]
    fn a_lost_bundle_is_placed_again_as_its_strategy_wants() {
        let free = nodes(&[4.0, 4.0, 4.0, 4.0]);
        let b = vec![cpu(1.0); 3];
        let kept = [1, 3];
        let again = |s| plan_lost(&b, &[1], s, &kept, &free);
        assert_eq!(
            again(Strategy::StrictSpread),
            Some(vec![2]),
            "not on 1 or 3"
        );
        assert_eq!(again(Strategy::Spread), Some(vec![2]));
        let packed = again(Strategy::Pack).unwrap();
        assert!(kept.contains(&packed[0]), "next to the others: {packed:?}");
        // Strict pack: the others' node, or wait.
        assert_eq!(
            plan_lost(&b, &[1, 2], Strategy::StrictPack, &[4], &free),
            Some(vec![4, 4])
        );
        let full = nodes(&[4.0, 4.0, 4.0, 1.0]);
        assert_eq!(
            plan_lost(&b, &[1, 2], Strategy::StrictPack, &[4], &full),
            None
        );
        // Strict spread with no node left outside the group: wait.
        let two = nodes(&[4.0, 4.0]);
        assert_eq!(
            plan_lost(&b, &[1], Strategy::StrictSpread, &[1, 2], &two),
            None
        );
        assert!(plan_lost(&b, &[1], Strategy::Spread, &[1, 2], &two).is_some());
        // Nothing kept (strict pack loses all with its node): planned as new.
        assert_eq!(
            plan_lost(&b, &[0, 1, 2], Strategy::StrictPack, &[], &free),
            Some(vec![1, 1, 1])
        );
    }

    #[test]
    fn strict_spread_backtracks_past_a_greedy_dead_end() {
        // Node 1 takes either bundle, node 2 only the small one: the large must go to 1.
        let free = nodes(&[4.0, 1.0]);
        let b = vec![cpu(1.0), cpu(3.0)];
        assert_eq!(plan(&b, Strategy::StrictSpread, &free), Some(vec![2, 1]));
    }

    #[test]
    fn a_plan_never_puts_more_on_a_node_than_it_has_free() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let strategies = [
            Strategy::Pack,
            Strategy::Spread,
            Strategy::StrictPack,
            Strategy::StrictSpread,
        ];
        for seed in 0..500 {
            let mut rng = StdRng::seed_from_u64(seed);
            let free: BTreeMap<NodeId, ResourceSet> = (1..=rng.random_range(1..6))
                .map(|n| (n, cpu(rng.random_range(0..6) as f64)))
                .collect();
            let bundles: Vec<ResourceSet> = (0..rng.random_range(1..6))
                .map(|_| cpu(rng.random_range(1..4) as f64))
                .collect();
            let s = strategies[rng.random_range(0..4)];
            let Some(p) = plan(&bundles, s, &free) else {
                continue;
            };
            let mut left = free.clone();
            for (b, n) in bundles.iter().zip(&p) {
                let f = left.get_mut(n).unwrap();
                assert!(b.fits_in(f), "seed {seed}: {s:?} overfills node {n}");
                f.take(b);
            }
            match s {
                Strategy::StrictPack => assert!(p.iter().all(|n| *n == p[0])),
                Strategy::StrictSpread => {
                    let d: std::collections::BTreeSet<_> = p.iter().collect();
                    assert_eq!(d.len(), p.len(), "seed {seed}");
                }
                _ => {}
            }
        }
    }
}
