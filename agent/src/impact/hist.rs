//! Run-queue latency histograms: log2 buckets of microseconds (bucket i
//! counts [2^i, 2^(i+1)) µs; bucket 0 also < 1 µs), and their percentiles.

use faultline_common::runq::RUNQ_BUCKETS;

pub type Buckets = [u64; RUNQ_BUCKETS];

/// What happened between two readings of a histogram.
pub fn delta(later: &Buckets, earlier: &Buckets) -> Buckets {
    std::array::from_fn(|i| later[i].saturating_sub(earlier[i]))
}

/// The q-quantile (0 < q ≤ 1) in µs, interpolated linearly inside its
/// bucket; None for an empty histogram. A bucket's bounds are the limits of
/// what it can say: the true value lies in the same bucket.
pub fn quantile(b: &Buckets, q: f64) -> Option<f64> {
    let count: u64 = b.iter().sum();
    if count == 0 {
        return None;
    }
    // The rank of the sample sought, 1-based.
    let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
    let mut below = 0u64;
    for (i, &n) in b.iter().enumerate() {
        if n > 0 && below + n >= rank {
            let lo = if i == 0 { 0.0 } else { (1u64 << i) as f64 };
            let hi = (1u64 << (i + 1)) as f64;
            let frac = (rank - below) as f64 / n as f64;
            return Some(lo + frac * (hi - lo));
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let mut b = [0u64; RUNQ_BUCKETS];
        assert_eq!(quantile(&b, 0.5), None);
        // 90 samples in [4, 8) µs, 10 in [1024, 2048).
        b[2] = 90;
        b[10] = 10;
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((4.0..8.0).contains(&p50), "{p50}");
        let p99 = quantile(&b, 0.99).unwrap();
        assert!((1024.0..2048.0).contains(&p99), "{p99}");
        assert_eq!(quantile(&b, 1.0), Some(2048.0));
        b = [0; RUNQ_BUCKETS];
        b[0] = 1;
        assert_eq!(quantile(&b, 0.5), Some(2.0));
    }

    #[test]
    fn delta_never_underflows() {
        let mut a = [0u64; RUNQ_BUCKETS];
        let mut b = [0u64; RUNQ_BUCKETS];
        a[3] = 5;
        b[3] = 2;
        b[4] = 1;
        let d = delta(&a, &b);
        assert_eq!((d[3], d[4]), (3, 0));
    }
}
