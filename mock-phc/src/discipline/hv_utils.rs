//! hv_utils' time sync (drivers/hv/hv_util.c as of Linux 6.12, the guest image's kernel): a
//! SYNC-flagged host sample sets the guest clock to host time at once (do_settimeofday64); with
//! `timesync_implicit=1` a plain sample does too when the guest is at least 5 s behind. The QEMU
//! backend emulates it from the harness (no Hyper-V channel under QEMU), so it is judged only
//! through the scenarios that combine it with chronyd.

use serde::{Deserialize, Serialize};

use crate::world::Sim;

pub(crate) const SOURCE: &str = "hv_utils";

/// The guest is this far behind before `timesync_implicit` steps on a plain sample.
const IMPLICIT_BEHIND_S: f64 = 5.0;

/// hv_utils module parameters.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HvUtilsConfig {
    /// `timesync_implicit=1`: also step on plain samples when >= 5 s behind.
    pub timesync_implicit: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct HvUtils {
    cfg: HvUtilsConfig,
}

impl HvUtils {
    pub(crate) fn new(cfg: HvUtilsConfig) -> Self {
        Self { cfg }
    }

    pub(crate) fn on_host_sample(&mut self, sim: &mut Sim, sync: bool) {
        // Guest minus host; hv_util.c steps to host time, not by a measured difference.
        let offset_s = sim.guest_offset_s();
        let implicit = self.cfg.timesync_implicit && offset_s <= -IMPLICIT_BEHIND_S;
        if (sync || implicit) && offset_s != 0.0 {
            sim.step(SOURCE, -offset_s);
        }
    }
}
