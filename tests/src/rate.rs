//! The one place that sizes rate checks: how many trials a test runs and
//! which counts it accepts when a fault fires with a configured probability.
//!
//! A check of probability `p` with tolerance `delta` passes a correct
//! implementation with probability at least `1 - FALSE_FAIL` and fails one
//! whose true rate is `p - delta` or `p + delta` (or anything further off)
//! with probability at least `1 - MISS`. The tails are exact binomial sums,
//! not a normal approximation: the normal curve is worst exactly where these
//! checks live (tails of 5e-4, small `p` where the binomial is skewed), and
//! the exact sum costs O(n) here.

/// Largest chance that a correct implementation fails a check (split evenly
/// between the two tails).
pub const FALSE_FAIL: f64 = 1e-3;
/// Largest chance that a rate off by `delta` passes.
pub const MISS: f64 = 1e-2;

/// Sample size and acceptance interval for one rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateCheck {
    pub p: f64,
    pub delta: f64,
    /// Trials to run.
    pub n: u64,
    /// Accepted counts of hits, inclusive.
    pub lo: u64,
    pub hi: u64,
}

impl RateCheck {
    /// The smallest sample (to within 0.5 %) meeting both error rates.
    ///
    /// # Panics
    /// If `p` is not strictly between 0 and 1 or `delta` is not positive: a
    /// rate of 0 or 1 is checked exactly, not statistically.
    pub fn new(p: f64, delta: f64) -> Self {
        assert!(0.0 < p && p < 1.0, "p={p} needs no statistics");
        assert!(delta > 0.0, "delta={delta}");
        // Start a little below the normal-approximation size and walk up:
        // discreteness makes the exact miss chance not quite monotone in n,
        // so the first n that meets it is the one returned (and verified).
        let z = |q: f64| normal_quantile(1.0 - q);
        let sd = |q: f64| (q * (1.0 - q)).sqrt();
        let far = sd((p + delta).min(1.0)).max(sd((p - delta).max(0.0)));
        let guess = ((z(FALSE_FAIL / 2.0) * sd(p) + z(MISS) * far) / delta).powi(2);
        let mut n = ((guess * 0.9) as u64).max(10);
        loop {
            let c = Self::with_n(p, delta, n);
            if c.miss() <= MISS {
                return c;
            }
            n += (n / 200).max(1);
        }
    }

    /// The acceptance interval for a given `n` (its error rates unchecked).
    pub fn with_n(p: f64, delta: f64, n: u64) -> Self {
        let pmf = binomial_pmf(n, p);
        // lo: the largest k with P(X < k) <= FALSE_FAIL / 2.
        let (mut lo, mut below) = (0, 0.0);
        while below + pmf[lo] <= FALSE_FAIL / 2.0 {
            below += pmf[lo];
            lo += 1;
        }
        let (mut hi, mut above) = (pmf.len() - 1, 0.0);
        while above + pmf[hi] <= FALSE_FAIL / 2.0 {
            above += pmf[hi];
            hi -= 1;
        }
        Self {
            p,
            delta,
            n,
            lo: lo as u64,
            hi: hi as u64,
        }
    }

    /// The trial count as the `u32` most senders take.
    pub fn n32(&self) -> u32 {
        u32::try_from(self.n).expect("sample fits u32")
    }

    /// Chance that a correct implementation passes.
    pub fn pass(&self) -> f64 {
        accept(self.n, self.p, self.lo, self.hi)
    }

    /// Larger chance of passing a rate `delta` away on either side (a side
    /// outside [0, 1] does not exist).
    pub fn miss(&self) -> f64 {
        [self.p - self.delta, self.p + self.delta]
            .into_iter()
            .filter(|q| (0.0..=1.0).contains(q))
            .map(|q| accept(self.n, q, self.lo, self.hi))
            .fold(0.0, f64::max)
    }

    pub fn contains(&self, hits: u64) -> bool {
        (self.lo..=self.hi).contains(&hits)
    }

    /// Panics unless `hits` of `n` trials are in the interval, naming `what`.
    #[track_caller]
    pub fn assert(&self, hits: u64, what: &str) {
        assert!(
            self.contains(hits),
            "{what}: {hits} of {} trials, expected {}..={} for p={} (fails p±{} with >= {} %)",
            self.n,
            self.lo,
            self.hi,
            self.p,
            self.delta,
            100.0 * (1.0 - MISS)
        );
    }
}

/// P(lo <= X <= hi) for X ~ Binomial(n, p).
fn accept(n: u64, p: f64, lo: u64, hi: u64) -> f64 {
    binomial_pmf(n, p)[lo as usize..=hi as usize].iter().sum()
}

/// The whole Binomial(n, p) mass function, by the ratio recurrence in logs
/// (no factorials, no underflow while walking through the far tail).
fn binomial_pmf(n: u64, p: f64) -> Vec<f64> {
    let nf = n as f64;
    if p <= 0.0 || p >= 1.0 {
        let mut v = vec![0.0; n as usize + 1];
        v[if p <= 0.0 { 0 } else { n as usize }] = 1.0;
        return v;
    }
    let odds = (p / (1.0 - p)).ln();
    let mut log = nf * (1.0 - p).ln();
    let mut v = Vec::with_capacity(n as usize + 1);
    for k in 0..=n {
        v.push(log.exp());
        let kf = k as f64;
        log += ((nf - kf) / (kf + 1.0)).ln() + odds;
    }
    v
}

/// Standard normal quantile (Acklam's rational approximation, relative
/// error < 1.2e-9); only seeds the search for n.
fn normal_quantile(q: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |t: f64| {
        let s = (-2.0 * t.ln()).sqrt();
        (((((C[0] * s + C[1]) * s + C[2]) * s + C[3]) * s + C[4]) * s + C[5])
            / ((((D[0] * s + D[1]) * s + D[2]) * s + D[3]) * s + 1.0)
    };
    if q < 0.02425 {
        tail(q)
    } else if q > 1.0 - 0.02425 {
        -tail(1.0 - q)
    } else {
        let s = q - 0.5;
        let r = s * s;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * s
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ln Γ(x) by Lanczos (g = 7, 9 terms; ~15 digits): an independent way
    /// to the binomial terms, so the checks below do not grade the
    /// recurrence with itself.
    fn ln_gamma(x: f64) -> f64 {
        const G: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let x = x - 1.0;
        let t = x + 7.5;
        let s = G[1..]
            .iter()
            .enumerate()
            .fold(G[0], |s, (i, g)| s + g / (x + i as f64 + 1.0));
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
    }

    /// P(lo <= X <= hi), each term from log-gamma.
    fn accept_lgamma(n: u64, p: f64, lo: u64, hi: u64) -> f64 {
        let nf = n as f64;
        (lo..=hi)
            .map(|k| {
                let kf = k as f64;
                (ln_gamma(nf + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(nf - kf + 1.0)
                    + kf * p.ln()
                    + (nf - kf) * (1.0 - p).ln())
                .exp()
            })
            .sum()
    }

    #[test]
    fn exact_tails_agree_with_closed_forms_and_log_gamma() {
        // Binomial(10, 1/2): P(X <= 2) = (1 + 10 + 45) / 1024.
        assert!((accept(10, 0.5, 0, 2) - 56.0 / 1024.0).abs() < 1e-15);
        assert!((accept_lgamma(10, 0.5, 0, 2) - 56.0 / 1024.0).abs() < 1e-12);
        // Binomial(20, 0.1): P(X = 0) = 0.9^20.
        assert!((accept(20, 0.1, 0, 0) - 0.9f64.powi(20)).abs() < 1e-15);
        for (n, p, lo, hi) in [
            (3200, 0.45, 1500, 1700),
            (15_000, 0.01, 120, 180),
            (20_000, 0.2, 3900, 4100),
        ] {
            let (a, b) = (accept(n, p, lo, hi), accept_lgamma(n, p, lo, hi));
            assert!((a - b).abs() < 1e-9, "n={n} p={p}: {a} vs {b}");
        }
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.0005) + 3.290_527).abs() < 1e-5);
    }

    /// The figures for the old bounds, as a check on the arithmetic:
    /// 500 ± 4.4 σ of 1000 passes p = 0.45 in 89 % of runs, 200 ± 4.4 σ of
    /// 400 passes 0.40 in 66 %, 1000 ± 4.4 σ of 2000 passes 0.45 in 47 %.
    #[test]
    fn the_old_bounds_let_close_errors_through() {
        let sd = (1000.0f64 * 0.25).sqrt();
        let (lo, hi) = ((500.0 - 4.4 * sd).ceil() as u64, (500.0 + 4.4 * sd) as u64);
        let pass = accept_lgamma(1000, 0.45, lo, hi);
        assert!((0.88..0.90).contains(&pass), "{pass}");
        let sd = (400.0f64 * 0.25).sqrt();
        let (lo, hi) = ((200.0 - 4.4 * sd).ceil() as u64, (200.0 + 4.4 * sd) as u64);
        let pass = accept_lgamma(400, 0.40, lo, hi);
        assert!((0.64..0.68).contains(&pass), "dns: {pass}");
        let sd = (2000.0f64 * 0.25).sqrt();
        let (lo, hi) = (
            (1000.0 - 4.4 * sd).ceil() as u64,
            (1000.0 + 4.4 * sd) as u64,
        );
        let pass = accept_lgamma(2000, 0.45, lo, hi);
        assert!((0.45..0.49).contains(&pass), "syscall_error: {pass}");
    }

    /// Every (p, delta) the suite uses, graded by the log-gamma sums: the
    /// right rate passes >= 99.9 %, a rate off by delta passes <= 1 %.
    #[test]
    fn every_check_of_the_suite_meets_both_error_rates() {
        for (p, delta) in [
            (0.5, 0.05),
            (0.01, 0.005),
            (0.1, 0.015),
            (0.5, 0.02),
            (0.2, 0.02),
            (0.75, 0.03),
            // The Gilbert model's entry chance at p = 0.1, bursts of 4.
            (0.1 / 4.0 / 0.9, 0.005),
        ] {
            let c = RateCheck::new(p, delta);
            let pass = accept_lgamma(c.n, p, c.lo, c.hi);
            assert!(pass >= 1.0 - FALSE_FAIL, "{c:?}: passes {pass}");
            for q in [p - delta, p + delta] {
                let miss = accept_lgamma(c.n, q, c.lo, c.hi);
                assert!(miss <= MISS, "{c:?}: passes p={q} with {miss}");
            }
            // Not wastefully large: 1 % fewer trials would miss a target.
            let smaller = RateCheck::with_n(p, delta, c.n * 99 / 100);
            assert!(
                smaller.pass() < 1.0 - FALSE_FAIL || smaller.miss() > MISS,
                "{c:?} could be smaller"
            );
            eprintln!(
                "p={p:.4} ±{delta}: n={} accept {}..={} (pass {pass:.5})",
                c.n, c.lo, c.hi
            );
        }
        // About 3,200 trials for p = 0.5 ± 0.05.
        let c = RateCheck::new(0.5, 0.05);
        assert!((3000..3400).contains(&c.n), "{c:?}");
    }
}
