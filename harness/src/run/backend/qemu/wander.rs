//! The guest oscillator's frequency wander in virtual time. The sim makes the guest's oscillator
//! wander (`wander_ppb_per_sqrt_s`, a random walk redrawn every world tick); QEMU's virtual clock
//! cannot, so the virtual-time backend moves the host clock, the igb PHC, the other way by the
//! same path (`mock_phc::WanderPath`: the sim's seed, stream and tick), in steps of whole
//! nanoseconds at each observation. Without it the real daemon saw a perfect oscillator and kept
//! a regression six times as long as the sim's, which changed how fast it noticed a jump.

use mock_phc::{WanderPath, World, WorldConfig};

/// The wander owed to the host clock, tick by tick.
#[derive(Debug, Clone)]
pub struct HostWander {
    path: WanderPath,
    /// The wander over the current tick (1e-9: the guest is 1 ppb fast).
    wander: f64,
    next_draw_ns: i64,
    /// Scenario time up to which the wander has been accounted.
    applied_to_ns: i64,
    /// Owed to the host clock and not yet stepped, ns.
    owed_ns: f64,
    /// Stepped so far, ns.
    pub stepped_ns: i64,
    /// Steps made.
    pub steps: u64,
}

impl HostWander {
    /// The scenario's wander from scenario time 0; None when its oscillator does not wander.
    pub fn new(world: &WorldConfig) -> Option<Self> {
        let mut path = World::wander_path(world);
        if !path.wanders() {
            return None;
        }
        let wander = path.draw();
        let next_draw_ns = path.tick_ns();
        Some(Self { path, wander, next_draw_ns, applied_to_ns: 0, owed_ns: 0.0, stepped_ns: 0, steps: 0 })
    }

    /// Accounts the wander up to scenario time `t_ns` (the guest ran over the span, or stood
    /// still) and returns the step the host clock owes now, whole ns (0: none). The path is drawn
    /// at every tick either way, as the sim's world draws it.
    pub fn advance(&mut self, t_ns: i64, running: bool) -> i64 {
        while self.applied_to_ns < t_ns {
            let end = t_ns.min(self.next_draw_ns);
            if running {
                // The guest gains `wander` on true time: the host clock, against the guest's
                // oscillator (virtual time), loses as much.
                self.owed_ns -= self.wander * (end - self.applied_to_ns) as f64;
            }
            self.applied_to_ns = end;
            if end == self.next_draw_ns {
                self.wander = self.path.draw();
                self.next_draw_ns += self.path.tick_ns();
            }
        }
        let step = self.owed_ns.round();
        self.owed_ns -= step;
        // |owed| stays within a tick's wander, far inside i64.
        let step = step as i64;
        if step != 0 {
            self.stepped_ns += step;
            self.steps += 1;
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mock_phc::OscillatorConfig;

    fn world(wander_ppb_per_sqrt_s: f64) -> WorldConfig {
        WorldConfig {
            seed: 7,
            guest: OscillatorConfig { freq_error_ppm: 12.0, wander_ppb_per_sqrt_s, phase_noise_ns: 0.0 },
            ..Default::default()
        }
    }

    #[test]
    fn no_wander_no_steps() {
        assert!(HostWander::new(&world(0.0)).is_none());
    }

    /// However the observations slice time, the host clock ends up moved by the same whole path
    /// (to within the last half nanosecond), and a stretch the guest stood still adds nothing
    /// but keeps the path's draws in step.
    #[test]
    fn steps_follow_the_path_whatever_the_slicing() {
        let cfg = world(5.0);
        let mut fine = HostWander::new(&cfg).unwrap();
        let mut coarse = HostWander::new(&cfg).unwrap();
        let mut by_hand = World::wander_path(&cfg);
        let tick = by_hand.tick_ns();
        let mut expect = 0.0;
        for _ in 0..20 {
            expect -= by_hand.draw() * tick as f64;
        }
        let end = 20 * tick;
        let mut t = 0;
        while t < end {
            t = (t + 333_333_333).min(end);
            fine.advance(t, true);
        }
        coarse.advance(end, true);
        for w in [&fine, &coarse] {
            assert!((w.stepped_ns as f64 - expect).abs() <= 0.5, "{} vs {expect}", w.stepped_ns);
        }
        assert!(expect.abs() > 10.0, "a path this steep moves the clock: {expect}");
        // Standing still for 3 ticks: no step, and the tick after runs on the path's 24th draw (w23).
        let before = fine.stepped_ns;
        assert_eq!(fine.advance(end + 3 * tick, false), 0);
        assert_eq!(fine.stepped_ns, before);
        let mut w23 = 0.0;
        for _ in 0..4 {
            w23 = by_hand.draw();
        }
        let step = fine.advance(end + 4 * tick, true);
        assert!((step as f64 + w23 * tick as f64).abs() <= 1.0, "{step} vs {}", -w23 * tick as f64);
    }
}
