//! The learning-rate schedule of SEALONG's recipe (XTuner's `LinearLR` warm-up from a factor of
//! 1e-5, then `CosineAnnealingLR` to 0), as a closed form of the optimizer step so that a resumed
//! run needs only the step number.
//!
//! Steps are optimizer steps (after gradient accumulation), numbered from 0. With `warmup`
//! = round(`warmup_ratio` × `total`) steps:
//!
//! ```text
//! step <  warmup:  lr = base × (f0 + (1 − f0) × step / warmup)          f0 = 1e-5
//! step >= warmup:  lr = base × ½ (1 + cos(π (step − warmup) / (total − warmup)))
//! ```
//!
//! (XTuner converts the ratio to iterations with mmengine's rounding; on a handful of steps the
//! two can differ by one warm-up step.)

/// XTuner's `LinearLR(start_factor=1e-5)`.
pub const WARMUP_START_FACTOR: f64 = 1e-5;

/// Linear warm-up then cosine decay to zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// `warmup_ratio` of `total_steps` as warm-up (rounded, at most all of them).
    pub fn new(base_lr: f64, warmup_ratio: f64, total_steps: usize) -> Self {
        let warmup_steps = ((warmup_ratio.clamp(0.0, 1.0) * total_steps as f64).round() as usize).min(total_steps);
        Schedule {
            base_lr,
            warmup_steps,
            total_steps,
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let f = WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * step as f64 / self.warmup_steps as f64;
            return self.base_lr * f;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = (step - self.warmup_steps).min(span) as f64 / span as f64;
        self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule::new(1e-4, 0.05, 100);
        assert_eq!(s.warmup_steps, 5);
        assert!((s.lr(0) - 1e-9).abs() < 1e-15);
        assert!(s.lr(1) < s.lr(4) && s.lr(4) < s.lr(5));
        assert!((s.lr(5) - 1e-4).abs() < 1e-15, "the peak is the base rate");
        let mid = s.lr(5 + 95 / 2);
        assert!((mid - 0.5e-4).abs() < 2e-6, "{mid}");
        assert!(s.lr(99) < 1e-6 && s.lr(99) > 0.0);
        assert!(s.lr(100) < 1e-20);
    }

    #[test]
    fn no_warmup_and_single_step() {
        let s = Schedule::new(2e-5, 0.0, 1);
        assert_eq!(s.warmup_steps, 0);
        assert_eq!(s.lr(0), 2e-5);
        let s = Schedule::new(2e-5, 0.05, 3);
        assert_eq!(s.warmup_steps, 0);
        assert!(s.lr(1) < 2e-5 && s.lr(1) > 0.0);
    }
}
