//! chronyd's own logs from the guest. The `refclocks` and `statistics` logs are always on: the
//! noise of chronyd's samples and of its regression (`chrony_sample_noise_ns` and
//! `chrony_regression_sd_ns` in the report's backend_info, estimated as the sim estimates its own,
//! `mock_phc::discipline::sample_noise`) and the share of its PHC polls that gave no sample
//! (`chrony_refclock_dropped_share`) are what the fidelity judgement gives the sim (`ensemble`). With `PHC_HARNESS_CHRONY_LOGS` set (a calibration aid), chronyd also writes its
//! tracking log, and backend_info carries all three logs as `chrony_statistics_log` and so on:
//! what the sim's chrony model is checked against line by line (mock-phc/CALIBRATION.md).

use std::collections::BTreeMap;

use mock_phc::discipline::sample_noise::Noise;
use phc_qemu::agent::Op;
use phc_qemu::Error;
use serde_json::{json, Value};

use crate::run::backend::chronylog;

/// The environment variable that keeps the logs in the report (and adds the tracking log).
pub const ENV: &str = "PHC_HARNESS_CHRONY_LOGS";
const LOGS: [&str; 3] = ["statistics", "refclocks", "tracking"];
/// The logs the noise figures come from, written in every run.
const ALWAYS: [&str; 2] = ["statistics", "refclocks"];

/// Whether `ENV` asks for chronyd's logs in the report.
fn enabled() -> bool {
    std::env::var_os(ENV).is_some()
}

fn logs() -> &'static [&'static str] {
    if enabled() {
        &LOGS
    } else {
        &ALWAYS
    }
}

/// `conf` with the log lines added.
pub fn chrony_conf(conf: String) -> String {
    format!("{conf}logdir /tmp\nlog {}\n", logs().join(" "))
}

/// Reads the logs from the guest and puts the noise figures (and with `ENV`, the logs) into
/// `info`; `call` asks the agent.
pub fn collect(mut read_file: impl FnMut(Op) -> Result<String, Error>, info: &mut BTreeMap<String, Value>) {
    let (mut raw, mut sds) = (Vec::new(), Vec::new());
    for f in logs() {
        let Ok(text) = read_file(Op::ReadFile { path: format!("/tmp/{f}.log") }) else { continue };
        match *f {
            "refclocks" => {
                raw = chronylog::refclock_raw_offsets(&text);
                if let Some(share) = chronylog::refclock_dropped_share(&text) {
                    info.insert("chrony_refclock_dropped_share".into(), json!((share * 1e4).round() / 1e4));
                }
            }
            "statistics" => sds = chronylog::statistics_std_devs(&text),
            _ => {}
        }
        if enabled() {
            info.insert(format!("chrony_{f}_log"), Value::String(text));
        }
    }
    let noise = Noise::new(&raw, &sds);
    let round = |ns: f64| json!((ns * 10.0).round() / 10.0);
    if let Some(ns) = noise.sample_ns {
        info.insert("chrony_sample_noise_ns".into(), round(ns));
    }
    if let Some(ns) = noise.regression_sd_ns {
        info.insert("chrony_regression_sd_ns".into(), round(ns));
    }
}
