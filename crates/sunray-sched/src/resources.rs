use std::fmt;

/// Fixed-point unit: 1.0 of a resource is `UNIT`.
pub const UNIT: u64 = 10_000;

/// Amounts of logical resources. Custom resources are kept sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ResourceSet {
    pub cpu: u64,
    pub gpu: u64,
    pub memory: u64,
    custom: Vec<(String, u64)>,
}

/// Converts an amount to fixed point, rounding to the nearest unit.
pub fn to_fixed(amount: f64) -> u64 {
    if amount.is_finite() && amount > 0.0 {
        (amount * UNIT as f64).round() as u64
    } else {
        0
    }
}

pub fn to_float(amount: u64) -> f64 {
    amount as f64 / UNIT as f64
}

impl ResourceSet {
    pub fn new(cpu: f64, gpu: f64, memory: f64) -> Self {
        ResourceSet {
            cpu: to_fixed(cpu),
            gpu: to_fixed(gpu),
            memory: to_fixed(memory),
            custom: Vec::new(),
        }
    }

    pub fn cpus(n: f64) -> Self {
        Self::new(n, 0.0, 0.0)
    }

    /// Adds (or replaces) a custom resource.
    pub fn with_custom(mut self, name: &str, amount: f64) -> Self {
        let amount = to_fixed(amount);
        match self.custom.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.custom[i].1 = amount,
            Err(i) => self.custom.insert(i, (name.to_string(), amount)),
        }
        self.custom.retain(|(_, a)| *a > 0);
        self
    }

    pub fn custom(&self) -> &[(String, u64)] {
        &self.custom
    }

    /// The sum of two requests.
    pub fn plus(&self, other: &ResourceSet) -> ResourceSet {
        let mut s = self.clone();
        s.cpu += other.cpu;
        s.gpu += other.gpu;
        s.memory += other.memory;
        for (n, a) in &other.custom {
            match s.custom.binary_search_by(|(m, _)| m.cmp(n)) {
                Ok(i) => s.custom[i].1 += a,
                Err(i) => s.custom.insert(i, (n.clone(), *a)),
            }
        }
        s
    }

    pub fn custom_amount(&self, name: &str) -> u64 {
        self.custom
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map(|i| self.custom[i].1)
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.cpu == 0 && self.gpu == 0 && self.memory == 0 && self.custom.is_empty()
    }

    /// True when every amount of `self` is available in `avail`.
    pub fn fits_in(&self, avail: &ResourceSet) -> bool {
        self.cpu <= avail.cpu
            && self.gpu <= avail.gpu
            && self.memory <= avail.memory
            && self
                .custom
                .iter()
                .all(|(n, a)| *a <= avail.custom_amount(n))
    }

    /// Subtracts `other`; the caller has checked [`fits_in`](Self::fits_in).
    pub fn take(&mut self, other: &ResourceSet) {
        debug_assert!(other.fits_in(self));
        self.cpu -= other.cpu;
        self.gpu -= other.gpu;
        self.memory -= other.memory;
        for (n, a) in &other.custom {
            if let Ok(i) = self.custom.binary_search_by(|(m, _)| m.cmp(n)) {
                self.custom[i].1 -= a;
            }
        }
    }

    /// Adds `other` back, never above `cap`.
    pub fn give(&mut self, other: &ResourceSet, cap: &ResourceSet) {
        self.cpu = (self.cpu + other.cpu).min(cap.cpu);
        self.gpu = (self.gpu + other.gpu).min(cap.gpu);
        self.memory = (self.memory + other.memory).min(cap.memory);
        for (n, a) in &other.custom {
            let limit = cap.custom_amount(n);
            match self.custom.binary_search_by(|(m, _)| m.cmp(n)) {
                Ok(i) => self.custom[i].1 = (self.custom[i].1 + a).min(limit),
                Err(i) if limit > 0 => self.custom.insert(i, (n.clone(), (*a).min(limit))),
                Err(_) => {}
            }
        }
    }

    /// The largest fraction of `total` this request (added to `used`) would occupy; used
    /// to spread load. Resources the node lacks count as full.
    pub fn load_after(&self, used: &ResourceSet, total: &ResourceSet) -> f64 {
        let frac = |req: u64, used: u64, tot: u64| -> f64 {
            if req == 0 {
                0.0
            } else if tot == 0 {
                f64::INFINITY
            } else {
                (req + used) as f64 / tot as f64
            }
        };
        let mut worst = frac(self.cpu, used.cpu, total.cpu)
            .max(frac(self.gpu, used.gpu, total.gpu))
            .max(frac(self.memory, used.memory, total.memory));
        for (n, a) in &self.custom {
            worst = worst.max(frac(*a, used.custom_amount(n), total.custom_amount(n)));
        }
        if self.is_empty() {
            // Zero-resource tasks spread by the node's CPU load.
            worst = if total.cpu == 0 {
                0.0
            } else {
                used.cpu as f64 / total.cpu as f64
            };
        }
        worst
    }

    /// `total - available`, saturating.
    pub fn used(total: &ResourceSet, available: &ResourceSet) -> ResourceSet {
        ResourceSet {
            cpu: total.cpu.saturating_sub(available.cpu),
            gpu: total.gpu.saturating_sub(available.gpu),
            memory: total.memory.saturating_sub(available.memory),
            custom: total
                .custom
                .iter()
                .map(|(n, a)| (n.clone(), a.saturating_sub(available.custom_amount(n))))
                .collect(),
        }
    }

    pub fn cpu_f64(&self) -> f64 {
        to_float(self.cpu)
    }
    pub fn gpu_f64(&self) -> f64 {
        to_float(self.gpu)
    }
    pub fn memory_f64(&self) -> f64 {
        to_float(self.memory)
    }
    pub fn custom_f64(&self) -> impl Iterator<Item = (&str, f64)> {
        self.custom.iter().map(|(n, a)| (n.as_str(), to_float(*a)))
    }
}

impl fmt::Display for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} CPU", self.cpu_f64())?;
        if self.gpu > 0 {
            write!(f, ", {} GPU", self.gpu_f64())?;
        }
        if self.memory > 0 {
            write!(f, ", {} memory", self.memory_f64())?;
        }
        for (n, a) in self.custom_f64() {
            write!(f, ", {a} {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_add_up_exactly() {
        let total = ResourceSet::new(1.0, 0.0, 0.0);
        let mut avail = total.clone();
        let tenth = ResourceSet::cpus(0.1);
        for _ in 0..10 {
            assert!(tenth.fits_in(&avail));
            avail.take(&tenth);
        }
        assert_eq!(avail.cpu, 0);
        assert!(!tenth.fits_in(&avail));
        for _ in 0..10 {
            avail.give(&tenth, &total);
        }
        assert_eq!(avail, total);
    }

    #[test]
    fn custom_resources_must_exist_on_the_node() {
        let node = ResourceSet::cpus(4.0).with_custom("ssd", 1.0);
        assert!(ResourceSet::cpus(1.0)
            .with_custom("ssd", 1.0)
            .fits_in(&node));
        assert!(!ResourceSet::cpus(1.0)
            .with_custom("ssd", 2.0)
            .fits_in(&node));
        assert!(!ResourceSet::cpus(1.0)
            .with_custom("tpu", 1.0)
            .fits_in(&node));
    }

    #[test]
    fn give_never_exceeds_capacity() {
        let total = ResourceSet::cpus(2.0);
        let mut avail = total.clone();
        avail.give(&ResourceSet::cpus(1.0), &total);
        assert_eq!(avail, total);
    }

    #[test]
    fn negative_and_nan_amounts_mean_zero() {
        assert_eq!(to_fixed(-1.0), 0);
        assert_eq!(to_fixed(f64::NAN), 0);
        assert_eq!(to_fixed(0.00005), 1);
    }
}
