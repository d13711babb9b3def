//! The seed's programs in Rust; see the examples of this package. This library holds
//! what the examples and their tests share.

/// A fast synthetic objective for the Tune examples: a noisy learning curve whose
/// final loss depends on the config, so that a good search finds the good corner.
pub mod synthetic {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use sunray_tune::Config;

    /// The loss a config converges to: best (0.1) at lr = 10^-2.5, width = 64, relu.
    pub fn final_loss(c: &Config) -> f64 {
        let lr = c.f64("lr");
        let width = c.i64("width") as f64;
        let act = if c.str("activation") == "relu" {
            0.0
        } else {
            0.2
        };
        0.1 + 0.3 * (lr.log10() + 2.5).powi(2) + 0.5 * ((width - 64.0) / 64.0).powi(2) + act
    }

    /// Loss at iteration `it` (1-based): every config follows the same curve shape, so
    /// the order of configs is the same at every iteration, plus a little noise
    /// (seeded by trial and iteration: a rerun gives the same numbers).
    pub fn loss_at(final_loss: f64, it: u64, trial_id: &str) -> f64 {
        let seed = trial_id
            .bytes()
            .fold(it, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let noise = StdRng::seed_from_u64(seed).random_range(-0.005..0.005);
        final_loss + 2.0 * (-(it as f64) / 4.0).exp() + noise
    }
}
