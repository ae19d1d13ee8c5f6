//! Where the time of a CUSE ioctl goes, seen from the server: for each request, when its read
//! returned and when its reply was written (CLOCK_MONOTONIC_RAW). With one client and one server
//! thread, consecutive records split an unrestricted ioctl into its steps.

/// One served request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The read that brought the request returned.
    pub received_ns: i64,
    /// The write of the reply returned.
    pub replied_ns: i64,
    /// The reply was a RETRY (the first call of an unrestricted ioctl).
    pub retry: bool,
}

/// Medians of each step, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Steps {
    /// First calls answered with RETRY: decode, encode and the write.
    pub first_call: i64,
    /// RETRY written to the retried request read: the kernel copying the caller's struct in,
    /// two task switches (to the caller and back).
    pub retry_turnaround: i64,
    /// Retried calls: decode, the clock reads, encode and the write.
    pub retried_call: i64,
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
    for w in t.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.retry && !b.retry {
            first.push(a.replied_ns - a.received_ns);
            turn.push(b.received_ns - a.replied_ns);
            retried.push(b.replied_ns - b.received_ns);
        } else if !a.retry && b.retry {
            between.push(b.received_ns - a.replied_ns);
        }
    }
    Steps {
        ioctls: first.len(),
        first_call: median(first),
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
        let t = |r, s, retry| Timing { received_ns: r, replied_ns: s, retry };
        let run = [t(0, 10, true), t(110, 130, false), t(1130, 1140, true), t(1240, 1260, false)];
        let s = steps(&run);
        assert_eq!(
            s,
            Steps { first_call: 10, retry_turnaround: 100, retried_call: 20, between_calls: 1000, ioctls: 2 }
        );
        assert_eq!(steps(&[]), Steps::default());
    }
}
