//! Seeded randomness: oscillators with frequency wander and the skewed distribution of PHC read
//! windows. Separate ChaCha streams keep the clocks' path independent of how often anyone reads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{LatencyConfig, OscillatorConfig};

/// Stream numbers; one per consumer so extra reads never change the clocks.
pub(crate) const STREAM_GUEST: u64 = 1;
pub(crate) const STREAM_NIC: u64 = 2;
pub(crate) const STREAM_READS: u64 = 3;
pub(crate) const STREAM_NTP: u64 = 4;
/// Which read batches come out slow (`LatencyConfig::slow_batch_share`): a stream of its own, so
/// that a share of 0 leaves every other draw as it was.
pub(crate) const STREAM_SLOW_BATCHES: u64 = 5;

pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Standard normal draws from a table of quantiles, for the per-read phase noise (Box-Muller's
/// log and cosine cost more than the rest of a read).
#[derive(Debug, Clone)]
pub(crate) struct NormalTable {
    quantiles: Vec<f64>,
}

impl NormalTable {
    pub(crate) fn new(rng: &mut ChaCha8Rng) -> Self {
        let mut quantiles: Vec<f64> = (0..1 << LATENCY_TABLE_BITS).map(|_| normal(rng)).collect();
        quantiles.sort_by(f64::total_cmp);
        Self { quantiles }
    }

    pub(crate) fn draw(&self, rng: &mut ChaCha8Rng) -> f64 {
        self.quantiles[(rng.random::<u32>() >> (32 - LATENCY_TABLE_BITS)) as usize]
    }
}

/// A standard normal draw (Box-Muller; rand 0.9 has no normal distribution without rand_distr).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Read windows drawn from a table of quantiles: a read asks for 25 windows every quarter second
/// of chrony's life, and a table lookup keeps 24 h of that well under a tenth of a second.
#[derive(Debug, Clone)]
pub(crate) struct LatencyTable {
    /// A fixed-size table: indices masked to its size need no bounds checks.
    quantiles_ns: Box<[i64; 1 << LATENCY_TABLE_BITS]>,
}

const LATENCY_TABLE_BITS: u32 = 12;

impl LatencyTable {
    pub(crate) fn new(cfg: &LatencyConfig, rng: &mut ChaCha8Rng) -> Self {
        let mut quantiles_ns = Box::new([0i64; 1 << LATENCY_TABLE_BITS]);
        for q in quantiles_ns.iter_mut() {
            *q = latency_ns(cfg, rng);
        }
        quantiles_ns.sort_unstable();
        Self { quantiles_ns }
    }

    /// The `q` quantile (0..=1) of the windows.
    pub(crate) fn quantile_ns(&self, q: f64) -> i64 {
        let last = self.quantiles_ns.len() - 1;
        // q is clamped to 0..=1, so the index stays within the table.
        self.quantiles_ns[((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last)]
    }

    /// Fills `out` with windows; one 64-bit draw yields five table indices.
    pub(crate) fn fill(&self, rng: &mut ChaCha8Rng, out: &mut [i64]) {
        const PER_DRAW: usize = (64 / LATENCY_TABLE_BITS) as usize;
        const MASK: u64 = (1 << LATENCY_TABLE_BITS) - 1;
        for chunk in out.chunks_mut(PER_DRAW) {
            let mut bits = rng.random::<u64>();
            for w in chunk {
                *w = self.quantiles_ns[(bits & MASK) as usize];
                bits >>= LATENCY_TABLE_BITS;
            }
        }
    }
}

/// A read window: the floor plus a log-normal excess whose median and 99th percentile match.
fn latency_ns(cfg: &LatencyConfig, rng: &mut ChaCha8Rng) -> i64 {
    let typical = (cfg.median_ns - cfg.min_ns) as f64;
    if typical <= 0.0 {
        return cfg.min_ns;
    }
    let tail = ((cfg.tail_ns - cfg.min_ns) as f64).max(typical);
    // 2.326 is the standard normal's 99th percentile.
    let sigma = (tail / typical).ln() / 2.326;
    let excess = typical * (sigma * normal(rng)).exp();
    // Cap far outliers so one draw cannot dwarf the configured tail.
    cfg.min_ns + excess.min(tail * 10.0) as i64
}

/// An oscillator's frequency error, updated on the world's fixed tick so the path depends only on
/// the seed and the disturbances, never on how the caller slices time.
#[derive(Debug, Clone)]
pub(crate) struct Oscillator {
    base: f64,
    wander: f64,
    wander_per_sqrt_s: f64,
    pub(crate) phase_noise_s: f64,
    rng: ChaCha8Rng,
}

impl Oscillator {
    pub(crate) fn new(cfg: &OscillatorConfig, rng: ChaCha8Rng) -> Self {
        Self {
            base: cfg.freq_error_ppm * 1e-6,
            wander: 0.0,
            wander_per_sqrt_s: cfg.wander_ppb_per_sqrt_s * 1e-9,
            phase_noise_s: cfg.phase_noise_ns * 1e-9,
            rng,
        }
    }

    /// Frequency error now, as a fraction (1e-6 = 1 ppm fast).
    pub(crate) fn freq(&self) -> f64 {
        self.base + self.wander
    }

    /// Random-walk step over `dt_s` of reference time.
    pub(crate) fn tick(&mut self, dt_s: f64) {
        if self.wander_per_sqrt_s > 0.0 && dt_s > 0.0 {
            self.wander += self.wander_per_sqrt_s * dt_s.sqrt() * normal(&mut self.rng);
        }
    }

    pub(crate) fn jump(&mut self, delta: f64) {
        self.base += delta;
    }
}

/// The guest oscillator's frequency wander along the very path a sim world draws (same seed,
/// stream and tick), for a backend whose guest oscillator cannot wander: QEMU's virtual clock is
/// a perfect one, so the QEMU backend moves the host clock by the wander instead, the other way
/// round. Built by `World::wander_path`.
#[derive(Debug, Clone)]
pub struct WanderPath {
    osc: Oscillator,
    tick_ns: i64,
}

impl WanderPath {
    pub(crate) fn new(cfg: &OscillatorConfig, seed: u64, tick_ns: i64) -> Self {
        Self { osc: Oscillator::new(cfg, rng(seed, STREAM_GUEST)), tick_ns }
    }

    /// The world's tick: the wander changes once per tick, from t = 0 on.
    pub fn tick_ns(&self) -> i64 {
        self.tick_ns
    }

    /// Whether the oscillator wanders at all.
    pub fn wanders(&self) -> bool {
        self.osc.wander_per_sqrt_s > 0.0
    }

    /// The wander (a fraction; 1e-9 = 1 ppb fast) over the next tick: the world draws it at
    /// every tick, the first at t = 0, whether the guest runs or not.
    pub fn draw(&mut self) -> f64 {
        self.osc.tick(self.tick_ns as f64 * 1e-9);
        self.osc.wander
    }
}
