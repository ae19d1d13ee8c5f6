//! Boot-time bench: boots the default guest image several times and prints QEMU start -> init's
//! ready line and -> the agent's first answer, per run and as medians. Used to choose the
//! launcher's defaults; see ci/vm-test.sh for the prerequisites.
//!
//! ```text
//! PHC_AGENT_BIN=... cargo run --release -p phc-qemu --example boot_bench -- \
//!     [--runs N] [--append CMDLINE] [--append-extra WORDS] [--modules a,b,c]
//!     [--kernel PATH] [--bios PATH|seabios] [--mark CONSOLE_TEXT]... [-- QEMU ARGS...]
//! ```

use std::time::{Duration, Instant};

use phc_qemu::agent::Op;
use phc_qemu::client::AgentClient;
use phc_qemu::image::{self, ImageSpec, READY_LINE};
use phc_qemu::GuestBuilder;

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let agent =
        std::env::var("PHC_AGENT_BIN").map_err(|_| "set PHC_AGENT_BIN (ci/build-agent.sh prints it)")?;
    let mut spec = ImageSpec::with_agent(agent);
    // As Session::boot does under TCG: ptp_kvm cannot load without KVM.
    spec.modules.retain(|m| m != "ptp_kvm");
    let (mut runs, mut append, mut extra_append, mut qemu_args) = (5usize, None, String::new(), Vec::new());
    let mut marks: Vec<String> = Vec::new();
    let mut kernel_override = None;
    let mut bios: Option<Option<std::path::PathBuf>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().ok_or("--runs N")?.parse()?,
            "--append" => append = Some(args.next().ok_or("--append CMDLINE")?),
            "--append-extra" => extra_append = args.next().ok_or("--append-extra WORDS")?,
            "--modules" => {
                spec.modules = args.next().ok_or("--modules a,b")?.split(',').map(str::to_owned).collect()
            }
            "--kernel" => kernel_override = Some(args.next().ok_or("--kernel PATH")?),
            "--bios" => {
                let b = args.next().ok_or("--bios PATH|seabios")?;
                bios = Some((b != "seabios").then(|| b.into()));
            }
            "--mark" => marks.push(args.next().ok_or("--mark CONSOLE_TEXT")?),
            "--" => qemu_args.extend(args.by_ref()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let initrd = phc_qemu::tmp::file("initrd", "bench", ".cpio")?;
    let mut kernel = image::build(&spec, &initrd)?;
    if let Some(k) = kernel_override {
        kernel = k.into();
    }
    let mut builder = GuestBuilder::new(kernel, &initrd);
    let cmdline = append.unwrap_or_else(|| builder.cmdline().to_owned());
    builder = builder.append(format!("{cmdline} {extra_append}").trim().to_owned());
    if let Some(b) = bios {
        builder = builder.bios(b);
    }
    for a in qemu_args {
        builder = builder.arg(a);
    }
    println!("cmdline: {}", builder.args(std::path::Path::new("DIR")).join(" "));
    let (mut to_init, mut to_ready) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let deadline = Instant::now() + Duration::from_secs(60);
        let t0 = Instant::now();
        let mut guest = builder.start(deadline)?;
        let mut seen = String::new();
        for m in &marks {
            guest.wait_console(m, deadline)?;
            seen.push_str(&format!(" {m:?}={:.3}s", t0.elapsed().as_secs_f64()));
        }
        guest.wait_console(READY_LINE, deadline)?;
        let init = t0.elapsed().as_secs_f64();
        let mut client = AgentClient::connect(&guest.agent_socket(), deadline)?;
        client.call(Op::Hello, deadline)?;
        let ready = t0.elapsed().as_secs_f64();
        let ptp = guest.console().lines().find(|l| l.contains("phc-init: ptp:")).unwrap_or("").to_owned();
        println!("run {i}: init_ready={init:.3}s agent_ready={ready:.3}s {ptp}{seen}");
        to_init.push(init);
        to_ready.push(ready);
    }
    drop(initrd);
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(",");
    println!(
        "boot_bench median init_ready={:.2}s agent_ready={:.2}s runs=[{}] init=[{}]",
        median(&to_init),
        median(&to_ready),
        fmt(&to_ready),
        fmt(&to_init)
    );
    Ok(())
}
