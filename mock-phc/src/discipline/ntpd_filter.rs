//! ntpd's (NTPsec 1.2.2) peer: the 8-stage clock filter (ntp_proto.c:1334-1510 clock_filter),
//! the peer's fitness (peer_unfit, root_distance) and, with one server, clock_select's choice of
//! it as the system peer. What a jump of the offset does here is what the real ntpd did in the
//! QEMU guest after a 30 s pause: the first sample at +30 s makes the peer's jitter (the RMS of
//! the register's offsets about the best one) seconds large, the peer unfit (no_sys_peer) until
//! the register holds the new offset alone, eight polls later. Line numbers are
//! ntpsec-1.2.2's ntpd/ntp_proto.c.

/// :57 MAXDISPERSE, :58 NTP_FWEIGHT, :66 CLOCK_SGATE; ntp.h:90 MAXDISTANCE; ntp_loopfilter.c:39
/// CLOCK_PHI, :44 CLOCK_ALLAN (log2 s).
const NTP_SHIFT: usize = 8;
pub(crate) const MAXDISPERSE_S: f64 = 16.0;
const FWEIGHT: f64 = 0.5;
const SGATE: f64 = 3.0;
const MAXDISTANCE_S: f64 = 1.5;
pub(crate) const PHI: f64 = 15e-6;
const ALLAN_S: f64 = 2048.0;

/// What a sample did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Filtered {
    /// The register had nothing usable, or the best sample was not new: nothing happens.
    Nothing,
    /// A popcorn spike (:1480-1490): ignored.
    Popcorn,
    /// The peer's new offset (server minus guest) for clock_select.
    Offset(f64),
}

#[derive(Debug, Clone)]
pub(crate) struct PeerFilter {
    offset: [f64; NTP_SHIFT],
    delay: [f64; NTP_SHIFT],
    disp: [f64; NTP_SHIFT],
    epoch: [f64; NTP_SHIFT],
    next: usize,
    /// peer->update: when the register's dispersions were last aged.
    update_s: f64,
    /// The peer's statistics from the best sample.
    pub(crate) offset_s: f64,
    pub(crate) delay_s: f64,
    pub(crate) disp_s: f64,
    pub(crate) jitter_s: f64,
    /// peer->epoch: the time of the best sample last used.
    epoch_s: f64,
    precision_s: f64,
}

impl PeerFilter {
    /// A cleared peer (peer_clear): every stage empty, at the dispersion ceiling.
    pub(crate) fn new(now_s: f64, precision_s: f64) -> Self {
        Self {
            offset: [0.0; NTP_SHIFT],
            delay: [0.0; NTP_SHIFT],
            disp: [MAXDISPERSE_S; NTP_SHIFT],
            epoch: [now_s; NTP_SHIFT],
            next: 0,
            update_s: now_s,
            offset_s: 0.0,
            delay_s: 0.0,
            disp_s: MAXDISPERSE_S,
            jitter_s: 0.0,
            epoch_s: f64::NEG_INFINITY,
            precision_s,
        }
    }

    /// clock_filter (:1334-1510): shifts the sample in at guest time `now_s`; `sorted`: the
    /// clock has stabilised (freq_cnt 0) and the register is sorted by distance; `hpoll_s`: the
    /// host poll interval, which bounds a popcorn spike's age.
    pub(crate) fn add(
        &mut self,
        now_s: f64,
        sample: (f64, f64, f64),
        sorted: bool,
        hpoll_s: f64,
    ) -> Filtered {
        let (offset_s, delay_s, disp_s) = sample;
        let j = self.next;
        self.offset[j] = offset_s;
        self.delay[j] = delay_s;
        self.disp[j] = disp_s;
        self.epoch[j] = now_s;
        let mut j = (j + 1) % NTP_SHIFT;
        self.next = j;
        // Age the others' dispersions; distances: the delay, or beyond the Allan intercept the
        // delay plus the dispersion, or the ceiling.
        let dtemp = PHI * (now_s - self.update_s);
        self.update_s = now_s;
        let mut dst = [0.0; NTP_SHIFT];
        let mut ord = [0usize; NTP_SHIFT];
        for i in (0..NTP_SHIFT).rev() {
            if i != 0 {
                self.disp[j] += dtemp;
            }
            if self.disp[j] >= MAXDISPERSE_S {
                self.disp[j] = MAXDISPERSE_S;
                dst[i] = MAXDISPERSE_S;
            } else if self.update_s - self.epoch[j] > ALLAN_S {
                dst[i] = self.delay[j] + self.disp[j];
            } else {
                dst[i] = self.delay[j];
            }
            ord[i] = j;
            j = (j + 1) % NTP_SHIFT;
        }
        if sorted {
            // :1398-1412, an insertion sort by distance (stable for equal ones).
            for i in 1..NTP_SHIFT {
                for k in 0..i {
                    if dst[k] > dst[i] {
                        ord.swap(k, i);
                        dst.swap(k, i);
                    }
                }
            }
        }
        let mut m = 0;
        for &d in &dst {
            if d >= MAXDISPERSE_S || (m >= 2 && d >= MAXDISTANCE_S) {
                continue;
            }
            m += 1;
        }
        // The dispersion, weighted by halves; the jitter, the RMS about the best sample.
        let k = ord[0];
        let (mut disp, mut jtemp) = (0.0, 0.0);
        for i in (0..NTP_SHIFT).rev() {
            let j = ord[i];
            disp = FWEIGHT * (disp + self.disp[j]);
            if i < m {
                jtemp += (self.offset[j] - self.offset[k]).powi(2);
            }
        }
        self.disp_s = disp;
        if m == 0 {
            return Filtered::Nothing;
        }
        let etemp = (self.offset_s - self.offset[k]).abs();
        self.offset_s = self.offset[k];
        self.delay_s = self.delay[k];
        self.jitter_s = if m > 1 { (jtemp / (m - 1) as f64).sqrt() } else { jtemp.sqrt() };
        self.jitter_s = self.jitter_s.max(self.precision_s);
        // Popcorn: both valid, the jump beyond 3 jitters, within two host polls.
        if self.disp_s < MAXDISTANCE_S
            && self.disp[k] < MAXDISTANCE_S
            && etemp > SGATE * self.jitter_s
            && self.epoch[k] - self.epoch_s < 2.0 * hpoll_s
        {
            return Filtered::Popcorn;
        }
        if self.epoch[k] <= self.epoch_s {
            return Filtered::Nothing;
        }
        self.epoch_s = self.epoch[k];
        Filtered::Offset(self.offset_s)
    }

    /// peer_unfit (:2636-2690): the root distance (:2090-2130; the server's root delay 0 and
    /// root dispersion `root_disp_s`) and the peer's dispersion each under MAXDISTANCE plus a
    /// host poll of dispersion.
    pub(crate) fn fit(&self, now_s: f64, hpoll_s: f64, root_disp_s: f64) -> bool {
        let limit = MAXDISTANCE_S + PHI * hpoll_s;
        let root_distance = self.delay_s / 2.0
            + self.precision_s
            + PHI * (now_s - self.update_s)
            + root_disp_s
            + self.jitter_s;
        root_distance < limit && self.disp_s < limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: f64 = 1e-6;

    fn fill(f: &mut PeerFilter, t0: f64, offsets: &[f64]) -> Vec<Filtered> {
        offsets
            .iter()
            .enumerate()
            .map(|(i, &o)| f.add(t0 + 64.0 * i as f64, (o, 0.0005 + 1e-6 * i as f64, P), true, 64.0))
            .collect()
    }

    /// A fresh peer is fit only once its weighted dispersion, 16 s per empty stage halved stage
    /// by stage, drops under 1.5 s: at its fourth sample.
    #[test]
    fn a_fresh_peer_is_fit_at_its_fourth_sample() {
        let mut f = PeerFilter::new(0.0, P);
        let fit: Vec<bool> = (0..6)
            .map(|i| {
                let t = 2.0 * f64::from(i);
                f.add(t, (0.001, 0.0005, P), false, 64.0);
                f.fit(t, 64.0, 0.0)
            })
            .collect();
        assert_eq!(fit, [false, false, false, true, true, true]);
    }

    /// One sample 30 s off among seven good ones makes the jitter seconds large and the peer
    /// unfit; it is fit again only once the register holds the new offset alone.
    #[test]
    fn a_jump_leaves_the_peer_unfit_until_the_register_is_new() {
        let mut f = PeerFilter::new(0.0, P);
        fill(&mut f, 0.0, &[0.0; 8]);
        assert!(f.fit(512.0, 64.0, 0.0));
        let mut fits = Vec::new();
        for i in 0..8 {
            let t = 576.0 + 64.0 * f64::from(i);
            f.add(t, (30.0, 0.0005, P), true, 64.0);
            fits.push(f.fit(t, 64.0, 0.0));
        }
        assert_eq!(fits, [false, false, false, false, false, false, false, true], "jitter {}", f.jitter_s);
    }

    /// The jitter never falls under the precision, whatever the samples.
    #[test]
    fn the_jitter_is_at_least_the_precision() {
        let mut f = PeerFilter::new(0.0, P);
        for r in fill(&mut f, 0.0, &[0.25; 12]) {
            assert_ne!(r, Filtered::Popcorn);
        }
        assert!(f.jitter_s >= P);
    }
}
