//! Small statistics: latency percentiles of one run, and the median and spread of several runs,
//! because one run on a shared 2-core machine with a noisy disk proves little.

use std::fmt;

/// Latencies of one run in microseconds, sorted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latencies(Vec<u32>);

impl Latencies {
    pub(crate) fn new(mut micros: Vec<u32>) -> Latencies {
        micros.sort_unstable();
        Latencies(micros)
    }

    /// The `p`-th percentile (0..=100) in milliseconds, or 0 with no samples.
    pub(crate) fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        let at = rank.min(self.0.len() - 1);
        self.0.get(at).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Several runs of one figure.
#[derive(Debug, Clone, Default)]
pub(crate) struct Runs(Vec<f64>);

impl Runs {
    pub(crate) fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    pub(crate) fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub(crate) fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub(crate) fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// The runs' values, in the order they were taken.
    pub(crate) fn values(&self) -> &[f64] {
        &self.0
    }
}

impl fmt::Display for Runs {
    /// `median (min–max)`, with as many decimals as the size of the numbers calls for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "-");
        }
        let (m, lo, hi) = (self.median(), self.min(), self.max());
        if self.0.len() == 1 {
            write!(f, "{}", num(m))
        } else {
            write!(f, "{} ({}–{})", num(m), num(lo), num(hi))
        }
    }
}

/// A number with decimals only where they matter.
pub(crate) fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_runs(values: &[f64], median: f64, shown: &str) {
        let mut runs = Runs::default();
        for v in values {
            runs.push(*v);
        }
        assert_eq!(runs.median(), median);
        assert_eq!(runs.to_string(), shown);
    }

    #[test]
    fn medians_and_spread() {
        check_runs(&[], 0.0, "-");
        check_runs(&[3.0], 3.0, "3.00");
        check_runs(&[300.0, 100.0, 200.0], 200.0, "200 (100–300)");
        check_runs(&[4.0, 1.0, 3.0, 2.0], 2.5, "2.50 (1.00–4.00)");
    }

    #[test]
    fn percentiles() {
        let l = Latencies::new((1..=100).rev().map(|ms| ms * 1000).collect());
        assert_eq!(l.ms(50.0), 51.0);
        assert_eq!(l.ms(99.0), 99.0);
        assert_eq!(l.ms(100.0), 100.0);
        assert_eq!(Latencies::default().ms(50.0), 0.0);
    }
}
