//! Statistics of the benchmarks: medians, percentiles, confidence intervals and
//! the one verdict rule every benchmark goes through ([`verdict`]).
//!
//! The rule: a target is a bound on one judged figure (a median of same-round
//! ratios, a p99, ...). PASS only when the figure's 95 % confidence interval
//! lies wholly inside the target, FAIL when it lies wholly outside, otherwise
//! INCONCLUSIVE, naming the interval: the noise of this run cannot tell.

/// Confidence level of every interval the verdicts are judged on.
pub const LEVEL: f64 = 0.95;

/// The warm-up runs and the p50/p90/p99/max table of "StartExperiment →
/// first {effect}" latencies (ns, sorted): after the response returned
/// (clamped at 0), after the call, and the call's round trip.
pub fn print_start_latency(
    effect: &str,
    measured: usize,
    warmup_after_return: &[i64],
    sorted: [&[i64]; 3],
) {
    let ms = |ns: i64| ns as f64 / 1e6;
    println!(
        "  runs: {measured} measured; {} warm-up runs not counted (returned → first {effect}: {})",
        warmup_after_return.len(),
        warmup_after_return
            .iter()
            .map(|r| format!("{:.3} ms", ms((*r).max(0))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  {:<40} {:>10} {:>10} {:>10} {:>10}",
        "latency (ms)", "p50", "p90", "p99", "max"
    );
    let labels = [
        format!("returned → first {effect} (clamped ≥ 0)"),
        format!("called → first {effect}"),
        "StartExperiment round trip".to_owned(),
    ];
    for (label, v) in labels.iter().zip(sorted) {
        println!(
            "  {label:<40} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(percentile(v, 99.0)),
            ms(*v.last().expect("runs"))
        );
    }
}

/// Nearest-rank percentile of an ascending slice.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

pub fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Interquartile range: the run-to-run noise of a handful of rounds, robust to one outlier.
pub fn iqr(v: &[f64]) -> f64 {
    let s = sorted(v);
    percentile(&s, 75.0) - percentile(&s, 25.0)
}

/// A two-sided confidence interval. An end is infinite where the data cannot
/// bound the figure at the wanted level (too few values).
#[derive(Clone, Copy, Debug)]
pub struct Ci {
    pub lo: f64,
    pub hi: f64,
}

impl Ci {
    /// Maps both ends (e.g. a ratio to a percentage); `f` must be increasing.
    pub fn map(self, f: impl Fn(f64) -> f64) -> Self {
        Self {
            lo: f(self.lo),
            hi: f(self.hi),
        }
    }

    /// `[lo, hi]`, each end shown with `show`, or "unbounded".
    pub fn show(self, show: &dyn Fn(f64) -> String) -> String {
        let end = |x: f64| {
            if x.is_finite() {
                show(x)
            } else {
                "unbounded".to_owned()
            }
        };
        format!("[{}, {}]", end(self.lo), end(self.hi))
    }
}

/// Distribution-free (order-statistic) confidence interval, at [`LEVEL`] or
/// more, of the q-quantile (0 < q < 1) of the population `v` was drawn from.
/// The number of values below the true quantile is Binomial(n, q); the
/// interval runs from the l-th to the u-th smallest value (1-based) with
/// P(B ≤ l-1) ≤ 2.5 % and P(B ≤ u-1) ≥ 97.5 %, equal tails. Where no such l
/// (or u ≤ n) exists, that end is infinite: e.g. a p99 needs at least 368
/// values before the largest one bounds it from above.
pub fn quantile_ci(v: &[f64], q: f64) -> Ci {
    let s = sorted(v);
    let n = s.len();
    let tail = (1.0 - LEVEL) / 2.0;
    // ln P(B = k), by the recursion P(k+1) = P(k)·(n-k)/(k+1)·q/(1-q), in
    // logs so that tiny probabilities (0.01^400) do not underflow.
    let ln_odds = (q / (1.0 - q)).ln();
    let mut ln_pmf = n as f64 * (1.0 - q).ln();
    let mut cdf = 0.0;
    let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
    for (k, &x) in s.iter().enumerate() {
        cdf += ln_pmf.exp(); // P(B ≤ k)
        // k = l - 1: the l-th smallest (index k) is a lower end while P(B ≤ k) ≤ tail.
        if cdf <= tail {
            lo = x;
        }
        // k = u - 1: the first u with P(B ≤ u-1) ≥ 1 - tail (index k).
        if cdf >= 1.0 - tail && hi.is_infinite() {
            hi = x;
        }
        ln_pmf += ((n - k) as f64 / (k + 1) as f64).ln() + ln_odds;
    }
    Ci { lo, hi }
}

/// Distribution-free confidence interval (≥ 95 %) of the median: the order
/// statistics j and n-1-j (0-based), j the largest with P(Binomial(n, ½) ≤ j)
/// ≤ 2.5 %. Unbounded with fewer than 6 values (their range covers the
/// median with only 93.75 % at n = 5).
pub fn median_ci(v: &[f64]) -> Ci {
    quantile_ci(v, 0.5)
}

/// The p99 (nearest rank) of latencies in ns, in ms, with its
/// order-statistic 95 % CI ([`quantile_ci`]: distribution-free, needs ≥ 368
/// values for a finite upper end).
pub fn p99_ms(ns: &[i64]) -> Figure<'static> {
    let ms: Vec<f64> = ns.iter().map(|n| *n as f64 / 1e6).collect();
    Figure {
        what: "p99",
        value: percentile_of(&ms, 99.0),
        ci: quantile_ci(&ms, 0.99),
    }
}

/// Milliseconds: 1.2345 → "1.234 ms".
pub fn show_ms(x: f64) -> String {
    format!("{x:.3} ms")
}

/// A small deterministic PRNG (xorshift64*) for the bootstrap.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % n
    }
}

/// Bootstrap resamples behind [`bootstrap_ci`].
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// Percentile-bootstrap confidence interval (at [`LEVEL`]) of `stat` over
/// independent resamples (with replacement, each of its own size) of every
/// group in `groups` (`stat` may reorder the resamples). For large groups
/// only (thousands of values for a p99): the bootstrap cannot reach beyond
/// the extremes of the data.
pub fn bootstrap_ci(groups: &[&[f64]], stat: impl Fn(&mut [Vec<f64>]) -> f64) -> Ci {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let mut resampled: Vec<Vec<f64>> = groups
                .iter()
                .map(|g| (0..g.len()).map(|_| g[rng.below(g.len())]).collect())
                .collect();
            stat(&mut resampled)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - LEVEL) / 2.0 * 100.0;
    Ci {
        lo: percentile(&stats, tail),
        hi: percentile(&stats, 100.0 - tail),
    }
}

/// Nearest-rank percentile of `v`, found by selection (reorders `v`).
pub fn select_percentile(v: &mut [f64], p: f64) -> f64 {
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    let i = rank.clamp(1, v.len()) - 1;
    *v.select_nth_unstable_by(i, f64::total_cmp).1
}

/// Nearest-rank percentile of an unsorted slice (copies it).
pub fn percentile_of(v: &[f64], p: f64) -> f64 {
    percentile(&sorted(v), p)
}

/// The side of a limit the judged figure must lie on to meet its target.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The figure must be below the limit.
    Below(f64),
    /// The figure must be above the limit.
    Above(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Inconclusive,
    Fail,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Inconclusive => "INCONCLUSIVE",
            Self::Fail => "FAIL",
        }
    }
}

/// The one verdict rule: PASS when the whole interval meets the target, FAIL
/// when none of it does, INCONCLUSIVE otherwise.
pub fn judge(ci: Ci, target: Target) -> Verdict {
    let (inside, outside) = match target {
        Target::Below(limit) => (ci.hi < limit, ci.lo >= limit),
        Target::Above(limit) => (ci.lo > limit, ci.hi <= limit),
    };
    if inside {
        Verdict::Pass
    } else if outside {
        Verdict::Fail
    } else {
        Verdict::Inconclusive
    }
}

/// A judged figure: what it is ("median", "p99"), its value and its 95 % CI.
pub struct Figure<'a> {
    pub what: &'a str,
    pub value: f64,
    pub ci: Ci,
}

/// The verdict of `figure` against `target` and its text, every number shown
/// with `show`, e.g. "PASS (median +1.23 %, 95 % CI [+0.40 %, +2.10 %] below
/// the +3 % target)" or "INCONCLUSIVE: 95 % CI [-33 %, +14 %] straddles the
/// +5 % target (median -10.3 %)".
pub fn verdict(figure: &Figure, target: Target, show: &dyn Fn(f64) -> String) -> (Verdict, String) {
    let (limit, side, other) = match target {
        Target::Below(l) => (l, "below", "above"),
        Target::Above(l) => (l, "above", "below"),
    };
    let v = judge(figure.ci, target);
    let ci = figure.ci.show(show);
    let (what, value, limit) = (figure.what, show(figure.value), show(limit));
    let text = match v {
        Verdict::Pass => {
            format!("PASS ({what} {value}, 95 % CI {ci} wholly {side} the {limit} target)")
        }
        Verdict::Fail => {
            format!("FAIL ({what} {value}, 95 % CI {ci} wholly {other} the {limit} target)")
        }
        Verdict::Inconclusive => {
            format!("INCONCLUSIVE: 95 % CI {ci} straddles the {limit} target ({what} {value})")
        }
    };
    (v, text)
}

/// Several verdicts that must all pass: the worst of them, then each part.
pub fn all_of(parts: &[(&str, (Verdict, String))]) -> (Verdict, String) {
    let worst = parts
        .iter()
        .map(|(_, (v, _))| *v)
        .max()
        .unwrap_or(Verdict::Inconclusive);
    let each: Vec<String> = parts
        .iter()
        .map(|(name, (_, text))| format!("{name}: {text}"))
        .collect();
    (worst, format!("{} ({})", worst.word(), each.join("; ")))
}

/// The signed percentage of a ratio: 1.034 → 3.4.
pub fn pct_of(ratio: f64) -> f64 {
    (ratio - 1.0) * 100.0
}

/// A signed percentage: 3.4 → "+3.40 %".
pub fn show_pct(x: f64) -> String {
    format!("{x:+.2} %")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ci_of_nine_is_second_and_eighth() {
        let v: Vec<f64> = (1..=9).map(f64::from).collect();
        let ci = median_ci(&v);
        assert_eq!((ci.lo, ci.hi), (2.0, 8.0));
    }

    #[test]
    fn median_ci_of_five_is_unbounded() {
        let ci = median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(ci.lo.is_infinite() && ci.hi.is_infinite());
        let ci = median_ci(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!((ci.lo, ci.hi), (1.0, 6.0));
    }

    #[test]
    fn p99_needs_368_values_for_an_upper_end() {
        let v: Vec<f64> = (1..=366).map(f64::from).collect();
        assert!(quantile_ci(&v, 0.99).hi.is_infinite());
        let v: Vec<f64> = (1..=400).map(f64::from).collect();
        let ci = quantile_ci(&v, 0.99);
        assert_eq!(ci.hi, 400.0);
        assert!(ci.lo > 380.0 && ci.lo < 396.0, "{ci:?}");
    }

    #[test]
    fn verdict_rule() {
        let f = |lo, hi| Figure {
            what: "median",
            value: (lo + hi) / 2.0,
            ci: Ci { lo, hi },
        };
        let show = |x: f64| format!("{x:+.0} %");
        assert_eq!(
            verdict(&f(-33.0, 14.0), Target::Below(5.0), &show).0,
            Verdict::Inconclusive
        );
        assert_eq!(
            verdict(&f(-33.0, 4.0), Target::Below(5.0), &show).0,
            Verdict::Pass
        );
        assert_eq!(
            verdict(&f(6.0, 9.0), Target::Below(5.0), &show).0,
            Verdict::Fail
        );
        assert_eq!(
            verdict(&f(21.0, 30.0), Target::Above(20.0), &show).0,
            Verdict::Pass
        );
        let (_, text) = verdict(&f(-33.0, 14.0), Target::Below(5.0), &show);
        assert_eq!(
            text,
            "INCONCLUSIVE: 95 % CI [-33 %, +14 %] straddles the +5 % target (median -10 %)"
        );
    }
}
