//! Where the time of a CUSE ioctl goes, seen from the server: for each request, when its read
//! returned and when its reply was written (CLOCK_MONOTONIC_RAW). With one client and one server
//! thread, consecutive records split an unrestricted ioctl into its steps.

/// One served request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The read that brought the request returned.
    pub received_ns: i64,
    /// The reply was encoded, before its write.
    pub handled_ns: i64,
    /// The write of the reply returned.
    pub replied_ns: i64,
    /// The reply was a RETRY (the first call of an unrestricted ioctl).
    pub retry: bool,
}

/// Medians of each step, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Steps {
    /// First calls answered with RETRY: decode, encode and the write. On one CPU the write
    /// wakes the caller, which preempts the server until the retried request is queued.
    pub first_call: i64,
    /// Of that, the server's own work before the write (decode, answer, encode).
    pub first_call_work: i64,
    /// RETRY written to the retried request read: the kernel copying the caller's struct in,
    /// two task switches (to the caller and back).
    pub retry_turnaround: i64,
    /// Retried calls: decode, the clock reads, encode and the write (which, on one CPU, runs the
    /// caller up to its next blocking point).
    pub retried_call: i64,
    /// Of that, the server's own work before the write (decode, clock reads, encode).
    pub retried_call_work: i64,
    /// Answer written to the next first call read: the caller's return, its own work, its next
    /// ioctl, two task switches.
    pub between_calls: i64,
    /// Ioctls (RETRY followed by an answer) the medians are over.
    pub ioctls: usize,
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// The step medians of a single-client, single-thread run.
pub fn steps(t: &[Timing]) -> Steps {
    let (mut first, mut turn, mut retried, mut between) = (vec![], vec![], vec![], vec![]);
    let (mut first_work, mut retried_work) = (vec![], vec![]);
    for w in t.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.retry && !b.retry {
            first.push(a.replied_ns - a.received_ns);
            first_work.push(a.handled_ns - a.received_ns);
            retried_work.push(b.handled_ns - b.received_ns);
            turn.push(b.received_ns - a.replied_ns);
            retried.push(b.replied_ns - b.received_ns);
        } else if !a.retry && b.retry {
            between.push(b.received_ns - a.replied_ns);
        }
    }
    Steps {
        ioctls: first.len(),
        first_call: median(first),
        first_call_work: median(first_work),
        retried_call_work: median(retried_work),
        retry_turnaround: median(turn),
        retried_call: median(retried),
        between_calls: median(between),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_of_two_ioctls() {
        let t = |r, s, retry| Timing { received_ns: r, handled_ns: r + 1, replied_ns: s, retry };
        let run = [t(0, 10, true), t(110, 130, false), t(1130, 1140, true), t(1240, 1260, false)];
        let s = steps(&run);
        assert_eq!(
            s,
            Steps {
                first_call: 10,
                first_call_work: 1,
                retry_turnaround: 100,
                retried_call: 20,
                retried_call_work: 1,
                between_calls: 1000,
                ioctls: 2
            }
        );
        assert_eq!(steps(&[]), Steps::default());
    }
}
