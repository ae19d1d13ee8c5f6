//! Linux PTP hardware clocks (`/dev/ptpN`): the kernel UAPI, a safe device handle with every read
//! and write method, sysfs metadata and discovery, driver expectations, and offset estimators.

pub mod clock;
pub mod device;
pub mod driver;
pub mod error;
pub mod estimate;
pub mod input;
pub mod node;
pub mod rtc;
pub mod sysfs;
pub mod uapi;
pub mod vmclock;

pub use clock::PtpClock;
pub use device::{Access, Caps, Form, Phc, Pin, PreciseSample, SysClock};
pub use driver::{Driver, Expected, Implements, ReadRequest, Support};
pub use error::{Error, Result};
pub use estimate::{Estimate, Sample};
pub use node::{Expect, NodeKind, SysfsClass};
pub use sysfs::{PhcInfo, Roots};
