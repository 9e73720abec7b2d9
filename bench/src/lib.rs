//! Shared helpers of berth's benchmark programs (`src/bin/*`). Each program
//! prints its figures next to a baseline measured in the same run, so that
//! the ratio means something on a shared, noisy machine.

use std::time::Duration;

/// Median of `samples` (sorted in place).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
