//! SIGINT/SIGTERM handling, in a process of its own (a test binary's signal state is shared by
//! all its tests): a signal makes the bounded waits return `Interrupted` promptly.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::sys::signal::{raise, Signal};
use phc_qemu::agent::Op;
use phc_qemu::client::AgentClient;
use phc_qemu::{signals, Error};

#[test]
fn a_signal_ends_a_long_agent_wait_within_a_read_slice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    // An agent that accepts and never answers.
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let mut c = AgentClient::connect(&path, Instant::now() + Duration::from_secs(5)).unwrap();
    let _held = server.join().unwrap().unwrap();

    signals::install().unwrap();
    assert_eq!(signals::pending(), None);
    assert!(signals::check().is_ok());
    let waiter = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = c.call(Op::Hello, Instant::now() + Duration::from_secs(60));
        (r.map(|_| ()), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    raise(Signal::SIGTERM).unwrap();
    let (r, took) = waiter.join().unwrap();
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Interrupted { signal: Signal::SIGTERM }), "{e:?}");
    assert_eq!(e.to_string(), "interrupted by SIGTERM");
    assert!(took < Duration::from_secs(2), "the 60 s wait ended only after {took:?}");
    assert_eq!(signals::pending(), Some(Signal::SIGTERM));
}
