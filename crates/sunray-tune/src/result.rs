//! What a trial reports, and which way is better.

use std::collections::BTreeMap;

use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A trial's id, as Ray names them: `<experiment hash>_<index>`, e.g. `3f2a1_00007`.
pub type TrialId = String;

/// Whether a lower (`Min`) or higher (`Max`) metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Min,
    Max,
}

impl Mode {
    /// The metric turned into "higher is better".
    pub fn score(self, v: f64) -> f64 {
        match self {
            Mode::Max => v,
            Mode::Min => -v,
        }
    }
    pub fn better(self, a: f64, b: f64) -> bool {
        self.score(a) > self.score(b)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "min" => Ok(Mode::Min),
            "max" => Ok(Mode::Max),
            _ => Err(format!("mode must be \"min\" or \"max\", not {s:?}")),
        }
    }
}

/// One reported result, as the schedulers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub training_iteration: u64,
    pub time_total_s: f64,
    pub metrics: BTreeMap<String, f64>,
}

impl TrialResult {
    /// A metric or one of the automatic fields (`training_iteration`, `time_total_s`).
    pub fn get(&self, attr: &str) -> Option<f64> {
        match attr {
            "training_iteration" => Some(self.training_iteration as f64),
            "time_total_s" => Some(self.time_total_s),
            _ => self.metrics.get(attr).copied(),
        }
    }
}

/// Seeded randomness that survives a restart: the `n`th draw of a seed is reproducible
/// without storing a generator's state, so saving a searcher or scheduler saves `n`.
pub fn rng_at(seed: u64, n: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
