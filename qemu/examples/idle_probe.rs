//! Idle-guest probe for virtual time: boots the default image under `-icount`, lets `--sleep`
//! guest seconds pass in one `sleep` inside the guest (optionally with chronyd reading the igb PHC),
//! and prints the wall time that took, the guest's interrupts per guest second by line, and the
//! timers that fired most (tracefs `timer:hrtimer_expire_entry` and `timer:timer_expire_entry`).
//!
//! ```text
//! PHC_AGENT_BIN=... cargo run --release -p phc-qemu --example idle_probe -- \
//!     [--sleep S] [--chronyd DPOLL] [--no-igb] [--append-extra WORDS] [-- QEMU ARGS...]
//! ```

use std::time::{Duration, Instant};

use phc_qemu::agent::Op;
use phc_qemu::client::AgentClient;
use phc_qemu::image::{self, ImageSpec, READY_LINE};
use phc_qemu::launcher::GuestClock;
use phc_qemu::GuestBuilder;

const SCRIPT: &str = r#"
T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs nodev $T
echo 0 > $T/tracing_on; echo > $T/trace; echo 8192 > $T/buffer_size_kb
echo 1 > $T/events/timer/hrtimer_expire_entry/enable
echo 1 > $T/events/timer/timer_expire_entry/enable
echo 1 > $T/events/sched/sched_wakeup/enable
cat /proc/interrupts > /tmp/irq0
echo 1 > $T/tracing_on
sleep SLEEP
echo 0 > $T/tracing_on
cat /proc/interrupts > /tmp/irq1
echo '== dmesg'; dmesg | grep -i -E 'tsc|clocksource|hpet|apic timer|calibrat|random|crng' | head -20
echo '== irq0'; cat /tmp/irq0; echo '== irq1'; cat /tmp/irq1
echo '== timers'
grep -o 'function=[^ ]*' $T/trace | sort | uniq -c | sort -rn | head -15
echo '== wakeups'
grep -o 'sched_wakeup: comm=[^ ]*' $T/trace | sort | uniq -c | sort -rn | head -15
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let agent =
        std::env::var("PHC_AGENT_BIN").map_err(|_| "set PHC_AGENT_BIN (ci/build-agent.sh prints it)")?;
    let mut spec = ImageSpec::with_agent(agent);
    spec.modules.retain(|m| m != "ptp_kvm");
    let (mut sleep_s, mut chronyd, mut extra, mut qemu_args) = (20u32, None, String::new(), Vec::new());
    let mut igb = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sleep" => sleep_s = args.next().ok_or("--sleep S")?.parse()?,
            "--chronyd" => chronyd = Some(args.next().ok_or("--chronyd DPOLL")?.parse::<i32>()?),
            "--no-igb" => igb = false,
            "--append-extra" => extra = args.next().ok_or("--append-extra WORDS")?,
            "--" => qemu_args.extend(args.by_ref()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let initrd = phc_qemu::tmp::file("initrd", "idle", ".cpio")?;
    let kernel = image::build(&spec, &initrd)?;
    let mut builder =
        GuestBuilder::new(kernel, &initrd).clock(GuestClock::Virtual { rtc_base_s: 1_767_225_600 });
    let cmdline = format!("{} {extra}", builder.cmdline());
    builder = builder.append(cmdline.trim().to_owned());
    builder = builder.igb(igb);
    for a in qemu_args {
        builder = builder.arg(a);
    }
    println!("cmdline: {}", builder.args(std::path::Path::new("DIR")).join(" "));
    let deadline = Instant::now() + Duration::from_secs(600);
    let t0 = Instant::now();
    let mut guest = builder.start(deadline)?;
    guest.wait_console(READY_LINE, deadline)?;
    let mut client = AgentClient::connect(&guest.agent_socket(), deadline)?;
    client.call(Op::Hello, deadline)?;
    println!("agent ready after {:.2} s", t0.elapsed().as_secs_f64());
    if let Some(dpoll) = chronyd {
        let conf = format!("refclock PHC /dev/ptp0 poll 0 dpoll {dpoll}\nmakestep 1 3\n");
        client.call(Op::WriteFile { path: "/etc/chrony.conf".into(), contents: conf }, deadline)?;
        client.call(
            Op::Spawn {
                name: "chronyd".into(),
                argv: ["chronyd", "-u", "root", "-d", "-f", "/etc/chrony.conf"].map(String::from).to_vec(),
                log: "/tmp/chronyd.log".into(),
            },
            deadline,
        )?;
    }
    let t1 = Instant::now();
    let script = SCRIPT.replace("SLEEP", &sleep_s.to_string());
    let ex = client.call(
        Op::Exec { argv: vec!["sh".into(), "-c".into(), script], timeout_s: f64::from(sleep_s) + 60.0 },
        deadline,
    )?;
    let wall = t1.elapsed().as_secs_f64();
    println!("{}", ex.response.ok.map(|v| v.to_string()).unwrap_or_default());
    println!("idle_probe: {sleep_s} guest s in {wall:.2} wall s ({:.1}x)", f64::from(sleep_s) / wall);
    drop(initrd);
    Ok(())
}
