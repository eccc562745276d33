//! What the load harnesses share: percentiles and milliseconds for their tables.

use std::time::Duration;

/// p50 and p99 of `times` (sorted in place).
pub fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
