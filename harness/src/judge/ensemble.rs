//! The data of a fidelity judged against an ensemble of sim runs (`run::ensemble` runs them):
//! how the sim was given the guest's noise, what each run gave, and its Markdown.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// One sim run of the ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Seed.
    pub seed: u64,
    /// First correction after the disturbance, s; null: never.
    pub time_to_first_correction_s: Option<f64>,
    /// Steps.
    pub steps: usize,
    /// The regression's standard deviation (`sample_noise`), ns.
    pub regression_sd_ns: Option<f64>,
    /// Whether the real run agrees with this one on every judged row.
    pub agrees: bool,
}

/// How the sim's chronyd was made to read the PHC as the guest's did, beyond its noise
/// (`run::ensemble`): the share of PHC polls the guest's chronyd dropped and the start phase of a
/// guest in real time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadPath {
    /// The share of its PHC polls the guest's chronyd dropped (its refclocks log; the median
    /// over the real runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_share_guest: Option<f64>,
    /// The share the sim's chronyd dropped, on average over the runs judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_share_sim: Option<f64>,
    /// The sim's refclock read with `nocrossts`: a guest that dropped polls did not read cross
    /// timestamps, whose delay is always 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocrossts: bool,
    /// The sim's `slow_batch_share` (mock_phc::LatencyConfig).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slow_batch_share: f64,
    /// chronyd's start drawn per seed over one poll: the guest ran in real time, where the harness
    /// does not hold the phase of chronyd's polls against the disturbance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub start_phase_drawn: bool,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl ReadPath {
    /// Nothing beyond the noise was changed (and nothing is written).
    pub fn is_plain(&self) -> bool {
        !self.nocrossts && self.slow_batch_share == 0.0 && !self.start_phase_drawn
    }

    /// A sentence or two for the reports; empty when plain.
    pub fn to_markdown(&self) -> String {
        let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0));
        let mut s = String::new();
        if self.nocrossts {
            s.push_str(&format!(
                " The guest's chronyd got no sample from {} of its PHC polls (chrony 4.3's hwclock.c drops a \
                 poll none of whose readings' delays lies between the first and second deciles it has seen, \
                 where its model of the PHC predicts the reading; a cross timestamp's delay is always 0, so the \
                 guest's were not): the sim's chronyd reads with `nocrossts` and {:.1}% of its read batches slow, \
                 and dropped {}.",
                pct(self.dropped_share_guest),
                self.slow_batch_share * 100.0,
                pct(self.dropped_share_sim)
            ));
        }
        if self.start_phase_drawn {
            s.push_str(
                " The guest ran in real time, where the phase of chronyd's polls against the disturbance is \
                 not held: each sim run starts chronyd at a point of its poll drawn from its seed.",
            );
        }
        s
    }
}

/// How the sim was given the guest's noise, and what each run gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    /// The regression's standard deviation in the scenario's own sim run, ns.
    pub regression_sd_ns_sim: Option<f64>,
    /// The regression's standard deviation in the guest (chronyd's statistics log), ns.
    pub regression_sd_ns_guest: Option<f64>,
    /// chronyd's sample noise in the scenario's own sim run, ns (shown, not used).
    pub sample_noise_ns_sim: Option<f64>,
    /// chronyd's sample noise in the guest (its refclocks log), ns (shown, not used).
    pub sample_noise_ns_guest: Option<f64>,
    /// The scenario's read noise (`world.guest.phase_noise_ns`).
    pub scenario_phase_noise_ns: f64,
    /// The read noise the ensemble ran at.
    pub phase_noise_ns: f64,
    /// How the runs read the PHC beyond the noise.
    #[serde(default, skip_serializing_if = "ReadPath::is_plain")]
    pub read_path: ReadPath,
    /// Every run.
    pub members: Vec<Member>,
    /// The real run judged as one draw from the members (weak evidence): the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<crate::judge::distribution::DistributionFidelity>,
}

impl Ensemble {
    /// The members' mean regression standard deviation, ns.
    pub fn mean_regression_sd_ns(&self) -> Option<f64> {
        crate::model::stats::mean(self.members.iter().filter_map(|m| m.regression_sd_ns))
    }

    /// A Markdown paragraph and table for the fidelity report.
    pub fn to_markdown(&self) -> String {
        let n = |v: Option<f64>| v.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.1} ns"));
        let unscaled =
            self.sample_noise_ns_guest.is_some_and(|n| n < crate::judge::distribution::NO_READ_NOISE_NS);
        let how = if unscaled {
            format!(
                "the scenario's {:.1} ns (the guest's raw samples have no read noise, so its chronyd regression's \
                 scatter is not read noise and is not matched)",
                self.phase_noise_ns
            )
        } else if self.regression_sd_ns_guest.is_some() {
            format!(
                "{:.1} ns, the scenario's {:.1} ns scaled so that the sim's chronyd regression scatters as the \
                 guest's",
                self.phase_noise_ns, self.scenario_phase_noise_ns
            )
        } else {
            format!("the scenario's {:.1} ns (no figure from the guest to match)", self.phase_noise_ns)
        };
        let mut s = format!(
            "\nEnsemble: {} sim runs at read noise {how}. The regression's standard deviation (median of the first \
             {} regressions): guest {}, the scenario's own sim run {}, the ensemble {} on average. Sample noise: \
             guest {}, sim {} (robust: the median absolute deviation of second differences). ",
            self.members.len(),
            mock_phc::discipline::sample_noise::REGRESSIONS,
            n(self.regression_sd_ns_guest),
            n(self.regression_sd_ns_sim),
            n(self.mean_regression_sd_ns()),
            n(self.sample_noise_ns_guest),
            n(self.sample_noise_ns_sim),
        );
        s.push_str(self.read_path.to_markdown().trim_start());
        if !self.read_path.is_plain() {
            s.push(' ');
        }
        s.push_str(
            "The rows above are the scenario's own sim run, shown. The verdict is the real run judged as one draw \
             from the ensemble's runs: inside their central 80% (p10 to p90) widened by each row's tolerance, or in \
             their tail (outside that, inside their min to max widened alike: a draw a faithful sim gives one time \
             in five), its step count and direction among theirs; outside their range it disagrees. One run is \
             weak evidence; `--repeat N` judges distributions.\n\n",
        );
        if let Some(d) = &self.draw {
            s.push_str(
                "| metric | ensemble median [p10 - p90] | min - max | real | tolerance | inside |\n|---|---|---|---|---|---|\n",
            );
            let num = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.3}"));
            for r in &d.rows {
                s.push_str(&format!(
                    "| {} | {} [{} - {}] | {} - {} | {} | {} | {} |\n",
                    crate::format::escape::markdown_cell(&r.metric),
                    num(r.sim.median),
                    num(r.sim.p10),
                    num(r.sim.p90),
                    num(r.sim.min),
                    num(r.sim.max),
                    num(r.qemu.median),
                    num(Some(r.tolerance)),
                    match (r.agrees, r.tail > 0) {
                        (false, _) => "**NO**",
                        (true, true) => "tail",
                        (true, false) => "yes",
                    }
                ));
            }
            let tail: Vec<&str> = d.rows.iter().filter(|r| r.tail > 0).map(|r| r.metric.as_str()).collect();
            s.push_str(&format!(
                "\nOne draw: {} (weak evidence).\n\n",
                match (d.agrees, tail.is_empty()) {
                    (false, _) => "OUTSIDE the ensemble's range on a row".to_owned(),
                    (true, true) => "inside on every row".to_owned(),
                    (true, false) =>
                        format!("in the ensemble's tail on {}, inside elsewhere", tail.join(", ")),
                }
            ));
        }
        s.push_str("| seed | first correction s | steps | regression sd | pairs with the real run |\n|---|---|---|---|---|\n");
        for m in &self.members {
            let t = m.time_to_first_correction_s.map_or_else(|| "never".to_owned(), |t| format!("{t:.2}"));
            s.push_str(&format!(
                "| {} | {t} | {} | {} | {} |\n",
                m.seed,
                m.steps,
                n(m.regression_sd_ns),
                if m.agrees { "yes" } else { "no" }
            ));
        }
        s
    }
}
