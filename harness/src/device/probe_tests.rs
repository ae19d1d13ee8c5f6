//! The probe's judging logic against fakes that answer as the kernel's ptp_chardev.c and
//! ptp_clock.c would for a given driver. The fakes record every call and panic on one they must
//! not see (a write without --allow-clock-writes); faults come from decorators.

use std::cell::{Cell, RefCell};

use super::*;

/// What a driver implements, as `struct ptp_clock_info` says it.
#[derive(Clone, Copy)]
struct Driverish {
    gettimex64: bool,
    getcrosststamp: bool,
    adjfine_ok: bool,
    settime_ok: bool,
    max_adj_ppb: i32,
}

const HYPERV: Driverish = Driverish {
    gettimex64: false,
    getcrosststamp: false,
    adjfine_ok: false,
    settime_ok: false,
    max_adj_ppb: 0,
};
const KVM: Driverish = Driverish { getcrosststamp: true, ..HYPERV };
const VMCLOCK: Driverish = Driverish { gettimex64: true, getcrosststamp: true, ..HYPERV };

/// A fake PHC behind one descriptor.
struct Fake {
    d: Driverish,
    access: Access,
    writes_allowed: bool,
    dialed_ppb: Cell<f64>,
    /// Clock ids EXTENDED accepts (old kernels: REALTIME only).
    ext_clockids: &'static [i32],
    posix_clock: bool,
    calls: RefCell<Vec<String>>,
}

impl Fake {
    fn new(d: Driverish, access: Access, writes_allowed: bool) -> Self {
        Self {
            d,
            access,
            writes_allowed,
            dialed_ppb: Cell::new(0.0),
            ext_clockids: &[libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC, libc::CLOCK_MONOTONIC_RAW],
            posix_clock: true,
            calls: RefCell::new(Vec::new()),
        }
    }

    fn log(&self, call: &str) {
        self.calls.borrow_mut().push(call.to_owned());
    }

    /// The posix-clock layer's checks before a write reaches the driver.
    fn write(&self, call: &str) -> phc::Result<()> {
        self.log(call);
        if !self.posix_clock {
            return Err(phc::Error::InvalidArgument);
        }
        if self.access == Access::ReadOnly {
            return Err(phc::Error::ReadOnly);
        }
        assert!(self.writes_allowed, "unexpected write {call} without --allow-clock-writes");
        Ok(())
    }

    fn writes(&self) -> Vec<String> {
        let w = ["settime", "adjfine", "step"];
        self.calls.borrow().iter().filter(|c| w.iter().any(|p| c.starts_with(p))).cloned().collect()
    }
}

impl PtpClock for Fake {
    fn pin_getfunc_raw(&self, _form: Form, _desc: &mut phc::uapi::PtpPinDesc) -> phc::Result<()> {
        Err(phc::Error::InvalidArgument)
    }
    fn caps_raw(&self, _form: Form) -> phc::Result<Caps> {
        self.log("caps");
        Ok(Caps {
            max_adj_ppb: self.d.max_adj_ppb,
            n_alarm: 0,
            n_ext_ts: 0,
            n_per_out: 0,
            pps: false,
            n_pins: 0,
            cross_timestamping: self.d.getcrosststamp,
            adjust_phase: false,
            max_phase_adj_ns: 0,
        })
    }
    fn sys_offset_raw(&self, _form: Form, req: &mut PtpSysOffset) -> phc::Result<()> {
        self.log("sys_offset");
        if req.n_samples > 25 {
            return Err(phc::Error::InvalidArgument);
        }
        for (i, t) in req.ts.iter_mut().enumerate().take(2 * req.n_samples as usize + 1) {
            // sys at even slots every 1000 ns, the PHC 100 ns behind the midpoint.
            t.nsec = if i % 2 == 0 { i as u32 * 500 } else { i as u32 * 500 - 100 };
        }
        Ok(())
    }
    fn sys_offset_extended_raw(&self, _form: Form, req: &mut PtpSysOffsetExtended) -> phc::Result<()> {
        self.log("sys_offset_extended");
        if !self.d.gettimex64 {
            return Err(phc::Error::NotSupported);
        }
        if req.n_samples > 25 || req.rsv != [0, 0] || !self.ext_clockids.contains(&req.clockid) {
            return Err(phc::Error::InvalidArgument);
        }
        Ok(())
    }
    fn sys_offset_precise_raw(&self, _form: Form, _req: &mut PtpSysOffsetPrecise) -> phc::Result<()> {
        self.log("sys_offset_precise");
        if self.d.getcrosststamp {
            Ok(())
        } else {
            Err(phc::Error::NotSupported)
        }
    }
    fn gettime(&self) -> phc::Result<i64> {
        self.log("gettime");
        if self.posix_clock {
            Ok(1_000)
        } else {
            Err(phc::Error::InvalidArgument)
        }
    }
    fn settime(&self, ns: i64) -> phc::Result<()> {
        self.write(&format!("settime {ns}"))?;
        if self.d.settime_ok {
            Ok(())
        } else {
            Err(phc::Error::NotSupported)
        }
    }
    fn frequency(&self) -> phc::Result<f64> {
        self.log("frequency");
        Ok(self.dialed_ppb.get())
    }
    fn adjfine(&self, freq_ppb: f64) -> phc::Result<()> {
        self.write(&format!("adjfine {freq_ppb}"))?;
        if freq_ppb.abs() > f64::from(self.d.max_adj_ppb) {
            return Err(phc::Error::Other(nix::errno::Errno::ERANGE));
        }
        if self.d.adjfine_ok {
            Ok(())
        } else {
            Err(phc::Error::NotSupported)
        }
    }
    fn step(&self, delta_ns: i64) -> phc::Result<()> {
        self.write(&format!("step {delta_ns}"))?;
        if self.d.settime_ok {
            Ok(())
        } else {
            Err(phc::Error::NotSupported)
        }
    }
}

/// Decorator: a driver that answers PRECISE although it has no cross timestamps.
struct PreciseWorks<'a>(&'a dyn PtpClock);

/// Decorator: the device disappears after `left` more calls.
struct Vanishes<'a> {
    inner: &'a dyn PtpClock,
    left: Cell<usize>,
}

impl Vanishes<'_> {
    fn tick(&self) -> phc::Result<()> {
        match self.left.get() {
            0 => Err(phc::Error::NoDevice),
            n => {
                self.left.set(n - 1);
                Ok(())
            }
        }
    }
}

impl PtpClock for PreciseWorks<'_> {
    fn pin_getfunc_raw(&self, form: Form, desc: &mut phc::uapi::PtpPinDesc) -> phc::Result<()> {
        self.0.pin_getfunc_raw(form, desc)
    }
    fn caps_raw(&self, _form: Form) -> phc::Result<Caps> {
        self.0.caps()
    }
    fn sys_offset_raw(&self, f: Form, r: &mut PtpSysOffset) -> phc::Result<()> {
        self.0.sys_offset_raw(f, r)
    }
    fn sys_offset_extended_raw(&self, f: Form, r: &mut PtpSysOffsetExtended) -> phc::Result<()> {
        self.0.sys_offset_extended_raw(f, r)
    }
    fn sys_offset_precise_raw(&self, _f: Form, _r: &mut PtpSysOffsetPrecise) -> phc::Result<()> {
        Ok(())
    }
    fn gettime(&self) -> phc::Result<i64> {
        self.0.gettime()
    }
    fn settime(&self, ns: i64) -> phc::Result<()> {
        self.0.settime(ns)
    }
    fn frequency(&self) -> phc::Result<f64> {
        self.0.frequency()
    }
    fn adjfine(&self, p: f64) -> phc::Result<()> {
        self.0.adjfine(p)
    }
    fn step(&self, d: i64) -> phc::Result<()> {
        self.0.step(d)
    }
}

impl PtpClock for Vanishes<'_> {
    fn pin_getfunc_raw(&self, form: Form, desc: &mut phc::uapi::PtpPinDesc) -> phc::Result<()> {
        self.inner.pin_getfunc_raw(form, desc)
    }
    fn caps_raw(&self, _form: Form) -> phc::Result<Caps> {
        self.tick()?;
        self.inner.caps()
    }
    fn sys_offset_raw(&self, f: Form, r: &mut PtpSysOffset) -> phc::Result<()> {
        self.tick()?;
        self.inner.sys_offset_raw(f, r)
    }
    fn sys_offset_extended_raw(&self, f: Form, r: &mut PtpSysOffsetExtended) -> phc::Result<()> {
        self.tick()?;
        self.inner.sys_offset_extended_raw(f, r)
    }
    fn sys_offset_precise_raw(&self, f: Form, r: &mut PtpSysOffsetPrecise) -> phc::Result<()> {
        self.tick()?;
        self.inner.sys_offset_precise_raw(f, r)
    }
    fn gettime(&self) -> phc::Result<i64> {
        self.tick()?;
        self.inner.gettime()
    }
    fn settime(&self, ns: i64) -> phc::Result<()> {
        self.tick()?;
        self.inner.settime(ns)
    }
    fn frequency(&self) -> phc::Result<f64> {
        self.tick()?;
        self.inner.frequency()
    }
    fn adjfine(&self, p: f64) -> phc::Result<()> {
        self.tick()?;
        self.inner.adjfine(p)
    }
    fn step(&self, d: i64) -> phc::Result<()> {
        self.tick()?;
        self.inner.step(d)
    }
}

fn setup(driver: Driver, allow_writes: bool) -> Setup {
    Setup { device: "/dev/ptp0".into(), driver, clock_name: Some(driver.name().into()), allow_writes }
}

fn check<'a>(r: &'a Report, name: &str) -> &'a Check {
    r.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name:?} in {r:#?}"))
}

fn deviations(r: &Report) -> Vec<&str> {
    r.checks.iter().filter(|c| c.verdict == Verdict::Deviation).map(|c| c.name.as_str()).collect()
}

#[test]
fn hyperv_conforms_and_nothing_is_written_without_the_flag() {
    let dev = Fake::new(HYPERV, Access::ReadOnly, false);
    let r = run(&dev, &dev, &setup(Driver::Hyperv, false)).unwrap();
    assert_eq!(deviations(&r), Vec::<&str>::new(), "{}", render_text(&r));
    assert_eq!(check(&r, "SYS_OFFSET_EXTENDED2 monotonic_raw").result, "EOPNOTSUPP");
    assert_eq!(check(&r, "SYS_OFFSET_PRECISE2").result, "EOPNOTSUPP");
    assert_eq!(check(&r, "ADJ_FREQUENCY (write back current)").verdict, Verdict::Skipped);
    assert_eq!(check(&r, "clock_settime on a read-only fd").result, "EACCES");
    // The only write was the one the read-only descriptor must refuse.
    assert_eq!(dev.writes(), ["settime 1000"]);
    // Basic readings give the offset: the fake's PHC is 100 ns behind the window's midpoint.
    let o = r.offset.clone().unwrap();
    assert_eq!((o.method, o.offset_ns, o.delay_ns), ("basic", 100, 1000));
    assert!(render_text(&r).contains("result: conforms to the hyperv row"));
}

#[test]
fn kvm_with_writes_refuses_each_write_the_way_its_row_says() {
    let dev = Fake::new(KVM, Access::ReadWrite, true);
    let ro = Fake::new(KVM, Access::ReadOnly, false);
    let r = run(&dev, &ro, &setup(Driver::Kvm, true)).unwrap();
    assert_eq!(deviations(&r), Vec::<&str>::new(), "{}", render_text(&r));
    // Frequency 0 passes the kernel's range check for max_adj 0, then the driver says no.
    assert_eq!(check(&r, "ADJ_FREQUENCY (write back current)").result, "EOPNOTSUPP");
    assert_eq!(check(&r, "ADJ_SETOFFSET 0 ns").result, "EOPNOTSUPP");
    assert_eq!(check(&r, "SYS_OFFSET_PRECISE").result, "ok");
    assert_eq!(dev.writes(), ["settime 1000", "adjfine 0", "step 0"]);
    assert_eq!(r.offset.unwrap().method, "precise");
}

#[test]
fn erange_from_a_zero_max_adj_counts_as_not_supported() {
    let dev = Fake::new(KVM, Access::ReadWrite, true);
    dev.dialed_ppb.set(12.0);
    let r = run(&dev, &dev, &setup(Driver::Kvm, true)).unwrap();
    let c = check(&r, "ADJ_FREQUENCY (write back current)");
    assert_eq!((c.result.as_str(), c.verdict), ("ERANGE", Verdict::Pass));
    assert!(c.note.as_deref().unwrap().contains("max_adj is 0"));
}

#[test]
fn precise_working_on_hyperv_is_a_deviation() {
    let inner = Fake::new(HYPERV, Access::ReadOnly, false);
    let dev = PreciseWorks(&inner);
    let r = run(&dev, &dev, &setup(Driver::Hyperv, false)).unwrap();
    assert_eq!(deviations(&r), ["SYS_OFFSET_PRECISE", "SYS_OFFSET_PRECISE2"]);
    assert_eq!(r.deviations, 2);
    assert!(render_text(&r).contains("2 deviation(s) from the hyperv row"));
}

#[test]
fn judged_against_the_wrong_row_every_difference_shows() {
    // A vmclock-like device claimed to be hyperv: EXTENDED, PRECISE and caps all differ.
    let dev = Fake::new(VMCLOCK, Access::ReadOnly, false);
    let r = run(&dev, &dev, &setup(Driver::Hyperv, false)).unwrap();
    let d = deviations(&r);
    assert!(d.contains(&"cross_timestamping") && d.contains(&"SYS_OFFSET_EXTENDED realtime"), "{d:?}");
    // Strictness rows judge argument checking only, so they pass whatever the support.
    assert_eq!(check(&r, "SYS_OFFSET_EXTENDED2 reserved!=0").verdict, Verdict::Pass);
    assert_eq!(check(&r, "SYS_OFFSET_EXTENDED2 reserved!=0").result, "EINVAL");
    assert_eq!(check(&r, "SYS_OFFSET_PRECISE2 reserved!=0").result, "ok");
}

#[test]
fn an_old_kernel_without_clock_ids_is_noted_not_failed() {
    let mut dev = Fake::new(VMCLOCK, Access::ReadOnly, false);
    dev.ext_clockids = &[libc::CLOCK_REALTIME];
    let r = run(&dev, &dev, &setup(Driver::Vmclock, false)).unwrap();
    assert_eq!(deviations(&r), Vec::<&str>::new());
    let c = check(&r, "SYS_OFFSET_EXTENDED2 monotonic");
    assert_eq!((c.result.as_str(), c.verdict), ("EINVAL", Verdict::Info));
}

#[test]
fn a_cuse_device_is_reported_as_no_posix_clock() {
    let mut dev = Fake::new(HYPERV, Access::ReadOnly, false);
    dev.posix_clock = false;
    let s = Setup { clock_name: None, ..setup(Driver::Hyperv, false) };
    let r = run(&dev, &dev, &s).unwrap();
    assert_eq!(deviations(&r), Vec::<&str>::new());
    assert_eq!(check(&r, "clock_gettime").verdict, Verdict::Info);
    assert_eq!(check(&r, "clock_settime on a read-only fd").verdict, Verdict::Skipped);
    assert!(dev.writes().is_empty());
}

#[test]
fn a_device_that_disappears_stops_the_probe() {
    let inner = Fake::new(HYPERV, Access::ReadOnly, false);
    for left in [0, 3, 12] {
        let dev = Vanishes { inner: &inner, left: Cell::new(left) };
        assert!(matches!(run(&dev, &dev, &setup(Driver::Hyperv, false)), Err(phc::Error::NoDevice)));
    }
}

/// Every personality mock-phc simulates conforms to its own row, writes included, and the matrix
/// flags each one judged against another driver's row: the conformance matrix checked end to end
/// through the one driver table (`phc::Driver::implements`).
#[test]
fn simulated_personalities_conform_to_their_row_and_deviate_from_others() {
    const ALL: [Driver; 5] = [Driver::Hyperv, Driver::Kvm, Driver::Vmclock, Driver::Mock, Driver::Nic];
    for d in ALL {
        let dev = mock_phc::answer::simulated(d, true);
        let ro = mock_phc::answer::simulated(d, false);
        let r = run(&dev, &ro, &setup(d, true)).unwrap();
        assert_eq!(deviations(&r), Vec::<&str>::new(), "{d:?}");
        assert!(r.offset.is_some(), "{d:?}: an offset by some method");
        for other in ALL {
            let r = run(&dev, &ro, &setup(other, true)).unwrap();
            // The NIC row allows either answer for EXTENDED and PRECISE, so ptp_mock (adjustable,
            // no gettimex64, no cross timestamps) is a conforming NIC; every other pair differs.
            let conforms = d == other || (d == Driver::Mock && other == Driver::Nic);
            assert_eq!(deviations(&r).is_empty(), conforms, "{d:?} judged as {other:?}");
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Whatever the device, its sysfs name and the answers say, the text report holds no control
    /// character a terminal would act on.
    #[test]
    fn the_text_report_shows_control_characters(w in proptest::collection::vec(crate::format::escape::fixtures::nasty(), 1..5)) {
        let mut r = crate::format::ktap::tests::probe_report();
        r.device = w[0].clone();
        r.clock_name = Some(w[w.len() - 1].clone());
        for (i, c) in r.checks.iter_mut().enumerate() {
            c.name = w[i % w.len()].clone();
            c.result = w[(i + 1) % w.len()].clone();
            c.note = Some(w[(i + 2) % w.len()].clone());
        }
        let text = render_text(&r);
        crate::format::escape::fixtures::terminal_safe(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
        proptest::prop_assert!(text.contains(&crate::format::escape::terminal(&r.device)));
    }
}
