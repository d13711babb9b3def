use crate::resources::{ResourceSet, UNIT};

/// What a running task holds on its node: its resources and, for GPUs, the index of each
/// device with the amount taken from it (1.0 for whole GPUs, less for fractions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allocation {
    pub resources: ResourceSet,
    pub gpus: Vec<(usize, u64)>,
}

impl Allocation {
    /// Indices of the devices this task may use.
    pub fn gpu_indices(&self) -> Vec<usize> {
        self.gpus.iter().map(|(i, _)| *i).collect()
    }
}

/// One node's resources: totals, what is free, and per-GPU free capacity, so that tasks
/// never share a GPU unless they ask for fractions of one.
#[derive(Debug, Clone)]
pub struct NodeLedger {
    total: ResourceSet,
    available: ResourceSet,
    gpu_free: Vec<u64>,
    /// CPU taken back by tasks that stopped waiting while their CPU was in use by
    /// others (oversubscription, as Ray allows): paid back from the next releases.
    owed_cpu: u64,
}

impl NodeLedger {
    /// A node with `total`; its GPU count is `total.gpu` rounded down.
    pub fn new(total: ResourceSet) -> Self {
        let n = (total.gpu / UNIT) as usize;
        NodeLedger {
            available: total.clone(),
            total,
            gpu_free: vec![UNIT; n],
            owed_cpu: 0,
        }
    }

    pub fn total(&self) -> &ResourceSet {
        &self.total
    }

    pub fn available(&self) -> &ResourceSet {
        &self.available
    }

    /// Could this node ever run `req`, even when idle?
    pub fn feasible(&self, req: &ResourceSet) -> bool {
        req.fits_in(&self.total) && gpu_shape_ok(req.gpu)
    }

    /// Would [`try_acquire`](Self::try_acquire) succeed now?
    pub fn can_acquire(&self, req: &ResourceSet) -> bool {
        if !req.fits_in(&self.available) || !gpu_shape_ok(req.gpu) {
            return false;
        }
        if req.gpu == 0 {
            true
        } else if req.gpu >= UNIT {
            let whole = self.gpu_free.iter().filter(|f| **f == UNIT).count();
            whole >= (req.gpu / UNIT) as usize
        } else {
            self.gpu_free.iter().any(|f| *f >= req.gpu)
        }
    }

    /// Takes `req` if it is free now, choosing GPU devices.
    ///
    /// Whole GPUs (1, 2, …) take that many entirely free devices, lowest index first;
    /// a fraction below 1 takes the fullest device that still has room (best fit, so
    /// fractions pack and whole devices stay free). Other GPU amounts are refused.
    pub fn try_acquire(&mut self, req: &ResourceSet) -> Option<Allocation> {
        if !req.fits_in(&self.available) || !gpu_shape_ok(req.gpu) {
            return None;
        }
        let gpus = if req.gpu == 0 {
            Vec::new()
        } else if req.gpu >= UNIT {
            let want = (req.gpu / UNIT) as usize;
            let free: Vec<usize> = (0..self.gpu_free.len())
                .filter(|&i| self.gpu_free[i] == UNIT)
                .take(want)
                .collect();
            if free.len() < want {
                return None;
            }
            free.into_iter().map(|i| (i, UNIT)).collect()
        } else {
            let best = (0..self.gpu_free.len())
                .filter(|&i| self.gpu_free[i] >= req.gpu)
                .min_by_key(|&i| (self.gpu_free[i], i))?;
            vec![(best, req.gpu)]
        };
        for (i, amount) in &gpus {
            self.gpu_free[*i] -= amount;
        }
        self.available.take(req);
        Some(Allocation {
            resources: req.clone(),
            gpus,
        })
    }

    pub fn release(&mut self, alloc: &Allocation) {
        for (i, amount) in &alloc.gpus {
            if let Some(f) = self.gpu_free.get_mut(*i) {
                *f = (*f + amount).min(UNIT);
            }
        }
        self.available.give(&alloc.resources, &self.total);
        self.pay_debt();
    }

    /// A running task waits for others: its `cpu` (fixed-point, as in [`ResourceSet`])
    /// is free for them until [`reclaim_cpu`](Self::reclaim_cpu).
    pub fn lend_cpu(&mut self, cpu: u64) {
        let pay = cpu.min(self.owed_cpu);
        self.owed_cpu -= pay;
        self.available.cpu = (self.available.cpu + cpu - pay).min(self.total.cpu);
    }

    /// The task runs again: it takes its CPU back at once, even when others use it
    /// now; what is not free is owed and paid from the next releases.
    pub fn reclaim_cpu(&mut self, cpu: u64) {
        let take = cpu.min(self.available.cpu);
        self.available.cpu -= take;
        self.owed_cpu += cpu - take;
    }

    /// CPU in use beyond the node's total (tasks that took their lent CPU back).
    pub fn oversubscribed_cpu(&self) -> u64 {
        self.owed_cpu
    }

    fn pay_debt(&mut self) {
        let pay = self.owed_cpu.min(self.available.cpu);
        self.available.cpu -= pay;
        self.owed_cpu -= pay;
    }
}

/// GPU requests are whole numbers, or a single fraction below one.
fn gpu_shape_ok(gpu: u64) -> bool {
    gpu < UNIT || gpu.is_multiple_of(UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn gpus(n: f64) -> ResourceSet {
        ResourceSet::new(0.0, n, 0.0)
    }

    #[test]
    fn whole_gpus_never_overlap() {
        let mut l = NodeLedger::new(ResourceSet::new(8.0, 4.0, 0.0));
        let a = l.try_acquire(&gpus(2.0)).unwrap();
        let b = l.try_acquire(&gpus(1.0)).unwrap();
        let c = l.try_acquire(&gpus(1.0)).unwrap();
        assert_eq!(a.gpu_indices(), vec![0, 1]);
        assert_eq!(b.gpu_indices(), vec![2]);
        assert_eq!(c.gpu_indices(), vec![3]);
        assert!(l.try_acquire(&gpus(1.0)).is_none());
        l.release(&b);
        assert_eq!(l.try_acquire(&gpus(1.0)).unwrap().gpu_indices(), vec![2]);
    }

    #[test]
    fn fractions_share_a_device_and_leave_others_whole() {
        let mut l = NodeLedger::new(ResourceSet::new(8.0, 2.0, 0.0));
        let a = l.try_acquire(&gpus(0.5)).unwrap();
        let b = l.try_acquire(&gpus(0.5)).unwrap();
        assert_eq!(a.gpu_indices(), b.gpu_indices());
        // the other device is still whole
        let w = l.try_acquire(&gpus(1.0)).unwrap();
        assert_ne!(w.gpu_indices(), a.gpu_indices());
        assert!(l.try_acquire(&gpus(0.25)).is_none());
    }

    #[test]
    fn odd_gpu_amounts_are_infeasible() {
        let l = NodeLedger::new(ResourceSet::new(8.0, 4.0, 0.0));
        assert!(!l.feasible(&gpus(1.5)));
        assert!(l.feasible(&gpus(0.3)));
        assert!(!l.feasible(&gpus(5.0)));
    }

    /// Generated acquire/release sequences: no device is ever over-committed, free
    /// amounts never go negative, and releasing everything restores the node.
    #[test]
    fn random_sequences_keep_the_books_straight() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let total = ResourceSet::new(4.0, 3.0, 0.0);
            let mut l = NodeLedger::new(total.clone());
            let mut held: Vec<Allocation> = Vec::new();
            for _ in 0..300 {
                if !held.is_empty() && rng.random_bool(0.4) {
                    let a = held.swap_remove(rng.random_range(0..held.len()));
                    l.release(&a);
                } else {
                    let g = [0.0, 0.25, 0.5, 1.0, 2.0][rng.random_range(0..5)];
                    let req = ResourceSet::new(rng.random_range(0..3) as f64 * 0.5, g, 0.0);
                    if let Some(a) = l.try_acquire(&req) {
                        held.push(a);
                    }
                }
                let mut per_dev = [0u64; 3];
                let mut cpu = 0;
                for a in &held {
                    cpu += a.resources.cpu;
                    for (i, amt) in &a.gpus {
                        per_dev[*i] += amt;
                    }
                    // whole-GPU tasks hold whole devices only
                    if a.resources.gpu >= UNIT {
                        assert!(a.gpus.iter().all(|(_, amt)| *amt == UNIT));
                    }
                }
                assert!(per_dev.iter().all(|&d| d <= UNIT), "device over-committed");
                assert!(cpu <= total.cpu);
                assert_eq!(l.available().cpu, total.cpu - cpu);
            }
            for a in held.drain(..) {
                l.release(&a);
            }
            assert_eq!(l.available(), &total);
        }
    }
}
