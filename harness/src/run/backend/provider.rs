//! The host time-sync provider, emulating Hyper-V's VMICTimeSync: a host-time sample every 5 s
//! while the guest runs, and one flagged SYNC right after it resumes. Pure scheduling logic: the
//! QEMU backend asks it what is due at a given instant and delivers the samples itself.
#![forbid(unsafe_code)]

/// A sample to deliver now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Flagged ICTIMESYNCFLAG_SYNC: hv_utils steps the guest clock on it.
    pub sync: bool,
}

/// When samples are due. Times are host-monotonic nanoseconds supplied by the caller.
#[derive(Debug, Clone)]
pub struct Provider {
    interval_ns: i64,
    next_ns: i64,
    enabled: bool,
    paused: bool,
    sync_pending: bool,
}

impl Provider {
    /// A provider whose first sample (flagged SYNC, as at VM start) is due at `now_ns`.
    pub fn new(interval_ns: i64, now_ns: i64) -> Self {
        Self {
            interval_ns: interval_ns.max(1),
            next_ns: now_ns,
            enabled: true,
            paused: false,
            sync_pending: true,
        }
    }

    /// The host stops sending samples (staleness scenarios).
    pub fn stop(&mut self) {
        self.enabled = false;
    }

    /// The host sends samples again, starting now.
    pub fn resume_samples(&mut self, now_ns: i64) {
        self.enabled = true;
        self.next_ns = now_ns;
    }

    /// The VM is paused: nothing can be delivered.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// The VM runs again; with `sync`, a SYNC sample is due at once.
    pub fn resume(&mut self, now_ns: i64, sync: bool) {
        self.paused = false;
        if sync {
            self.sync_pending = true;
            self.next_ns = now_ns;
        } else {
            // The regular schedule goes on from where it was.
            while self.next_ns < now_ns {
                self.next_ns += self.interval_ns;
            }
        }
    }

    /// The guest rebooted: the host greets it with a SYNC sample, as at first start.
    pub fn reboot(&mut self, now_ns: i64) {
        self.paused = false;
        self.sync_pending = true;
        self.next_ns = now_ns;
    }

    /// What is due at `now_ns`, if anything; advances the schedule.
    pub fn poll(&mut self, now_ns: i64) -> Option<Due> {
        if self.paused || !self.enabled || now_ns < self.next_ns {
            return None;
        }
        let sync = std::mem::take(&mut self.sync_pending);
        while self.next_ns <= now_ns {
            self.next_ns += self.interval_ns;
        }
        Some(Due { sync })
    }

    /// When the next sample falls due (for sleeping until then).
    pub fn next_due_ns(&self) -> Option<i64> {
        (self.enabled && !self.paused).then_some(self.next_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn samples_every_interval_and_sync_after_resume() {
        let mut p = Provider::new(5 * S, 0);
        assert_eq!(p.poll(0), Some(Due { sync: true }));
        assert_eq!(p.poll(4 * S), None);
        assert_eq!(p.poll(5 * S), Some(Due { sync: false }));
        p.pause();
        assert_eq!(p.poll(20 * S), None);
        assert_eq!(p.next_due_ns(), None);
        p.resume(40 * S, true);
        assert_eq!(p.poll(40 * S), Some(Due { sync: true }));
        assert_eq!(p.poll(44 * S), None);
        assert_eq!(p.poll(45 * S), Some(Due { sync: false }));
    }

    #[test]
    fn resume_without_sync_keeps_the_schedule_and_stop_silences() {
        let mut p = Provider::new(5 * S, 0);
        p.poll(0);
        p.pause();
        p.resume(32 * S, false);
        assert_eq!(p.poll(32 * S), None);
        assert_eq!(p.poll(35 * S), Some(Due { sync: false }));
        p.stop();
        assert_eq!(p.poll(100 * S), None);
        p.resume_samples(200 * S);
        assert_eq!(p.poll(200 * S), Some(Due { sync: false }));
        p.reboot(300 * S);
        assert_eq!(p.poll(300 * S), Some(Due { sync: true }));
    }
}
