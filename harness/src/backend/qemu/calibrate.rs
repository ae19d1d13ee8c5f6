//! Calibration aid: with `PHC_HARNESS_CHRONY_LOGS` set, the guest's chronyd also writes its
//! statistics, refclocks and tracking logs (chrony.conf `log`), and the report's backend_info
//! carries them as `chrony_statistics_log` and so on: what the sim's chrony model is checked
//! against line by line (mock-phc/CALIBRATION.md).

use std::collections::BTreeMap;

use phc_qemu::agent::Op;
use phc_qemu::Error;
use serde_json::Value;

/// The environment variable that turns the logs on.
pub const ENV: &str = "PHC_HARNESS_CHRONY_LOGS";
const LOGS: [&str; 3] = ["statistics", "refclocks", "tracking"];

fn enabled() -> bool {
    std::env::var_os(ENV).is_some()
}

/// `conf` with the log lines added when the logs are on.
pub fn chrony_conf(conf: String) -> String {
    if enabled() {
        format!("{conf}logdir /tmp\nlog {}\n", LOGS.join(" "))
    } else {
        conf
    }
}

/// Reads the logs from the guest into `info` when they are on; `call` asks the agent.
pub fn collect(mut call: impl FnMut(Op) -> Result<Value, Error>, info: &mut BTreeMap<String, Value>) {
    if !enabled() {
        return;
    }
    for f in LOGS {
        if let Ok(v) = call(Op::ReadFile { path: format!("/tmp/{f}.log") }) {
            info.insert(format!("chrony_{f}_log"), v);
        }
    }
}
