//! Medians and percentiles of benchmark samples, and the machine's load.

use std::time::Duration;

/// The `q`-quantile (0.0–1.0) of sorted samples, nearest rank; `None` when
/// empty.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest sample with at least q of them at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// "median X ms, p99 Y ms, min, max over N" of durations.
pub fn summary(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{label}: median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms over {}",
        ms(quantile(samples, 0.5)),
        ms(quantile(samples, 0.99)),
        ms(samples.first().copied()),
        ms(samples.last().copied()),
        samples.len()
    );
}

/// The first three fields of /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[7u32], 0.99), Some(7));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }
}
