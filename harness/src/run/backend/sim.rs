//! The simulated backend: mock-phc's world in virtual time. Deterministic for a given seed and
//! orders of magnitude faster than real time.
#![forbid(unsafe_code)]

use mock_phc::{Disturbance, Event, World};

use crate::model::observation::Observation;
use crate::run::engine::Backend;

/// A scenario's world, stepped by the engine.
pub struct Sim {
    world: World,
    /// A rebooting guest has no clock to observe, unlike a paused one whose clock stands still.
    rebooting: bool,
}

impl Sim {
    /// Builds the world a scenario describes.
    pub fn new(cfg: &mock_phc::WorldConfig) -> Result<Self, mock_phc::Error> {
        Ok(Self { world: World::new(cfg)?, rebooting: false })
    }

    /// The world, as the run left it.
    pub fn world(&self) -> &World {
        &self.world
    }
}

impl Backend for Sim {
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "sim"
    }

    fn advance_to(&mut self, t_ns: i64) -> Result<(), Self::Error> {
        self.world.run_until(t_ns);
        Ok(())
    }

    fn disturb(&mut self, d: &Disturbance) -> Result<Option<f64>, Self::Error> {
        self.rebooting |= matches!(d, Disturbance::Reboot { .. });
        self.world.apply(d);
        Ok(None)
    }

    fn observe(&mut self) -> Result<Observation, Self::Error> {
        let t_s = self.world.now_ns() as f64 / 1e9;
        self.rebooting &= !self.world.is_running();
        if self.rebooting {
            return Ok(Observation { t_s, guest_offset_ns: None, phc_offset_ns: None, phc_error: None });
        }
        let (phc_offset_ns, phc_error) = match self.world.phc_offset_ns() {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.code().to_owned())),
        };
        Ok(Observation { t_s, guest_offset_ns: Some(self.world.guest_offset_ns()), phc_offset_ns, phc_error })
    }

    fn drain_events(&mut self) -> Result<Vec<Event>, Self::Error> {
        Ok(self.world.drain_events())
    }
}
