//! Properties of the CUSE codec and request handling: no bytes make the decoder or the server
//! panic, every reply is one the kernel can read, and encoding then decoding gives back the value.

use mock_phc::cuse::proto::{self, InHeader, IoctlIn, Iovec, Reply, Request};
use mock_phc::cuse::{ptp, Server};
use mock_phc::live::{self, HostSample, HypervPhc};
use proptest::prelude::*;

fn server() -> Server<HypervPhc> {
    let s = Server::new("ptp_prop", live::hyperv(live::SystemClocks)).unwrap();
    s.clock().apply(HostSample { host_ns: 1_700_000_000_000_000_000, monotonic_raw_ns: 0 });
    s
}

/// What fs/fuse/dev.c would accept back: a header whose length is the whole write, an errno in
/// range, no body with an error, and the request's id.
fn check_reply(input: &[u8], out: &[u8]) -> Result<(), TestCaseError> {
    let r = proto::decode_reply(out);
    prop_assert!(r.is_some(), "reply fails its own header check: {out:?}");
    let r = r.unwrap();
    prop_assert!(r.header.error <= 0 && r.header.error > -512);
    if r.header.error != 0 {
        prop_assert!(r.body.is_empty());
    }
    prop_assert_eq!(&r.header.unique.to_ne_bytes()[..], &input[8..16]);
    Ok(())
}

fn header() -> impl Strategy<Value = InHeader> {
    (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), any::<u16>()).prop_map(
        |(unique, nodeid, uid, gid, pid, total_extlen)| InHeader {
            len: 0,
            opcode: 0,
            unique,
            nodeid,
            uid,
            gid,
            pid,
            total_extlen,
        },
    )
}

fn served_cmd() -> impl Strategy<Value = u32> {
    prop::sample::select(phc::uapi::ALL_CODES.iter().map(|(_, c)| *c as u32).collect::<Vec<_>>())
}

fn request(data: &[u8]) -> impl Strategy<Value = Request<'_>> {
    let known = [14, 18, 25, 36, 39, 4096];
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(major, minor, flags)| Request::CuseInit {
            major,
            minor,
            flags
        }),
        any::<u32>().prop_map(|flags| Request::Open { flags }),
        any::<u64>().prop_map(|fh| Request::Release { fh }),
        any::<u64>().prop_map(|fh| Request::Flush { fh }),
        any::<u64>().prop_map(|unique| Request::Interrupt { unique }),
        (
            any::<u64>(),
            any::<u32>(),
            prop_oneof![served_cmd(), any::<u32>()],
            any::<u64>(),
            0..=data.len(),
            any::<u32>()
        )
            .prop_map(move |(fh, flags, cmd, arg, n, out_size)| Request::Ioctl {
                ioctl: IoctlIn { fh, flags, cmd, arg, in_size: n as u32, out_size },
                data: &data[..n],
            }),
        any::<u32>()
            .prop_filter("unknown opcode", move |o| !known.contains(o))
            .prop_map(|opcode| Request::Other { opcode }),
    ]
}

static DATA: [u8; 1300] = {
    let mut d = [0u8; 1300];
    let mut i = 0;
    while i < d.len() {
        d[i] = (i * 7 + 3) as u8;
        i += 1;
    }
    d
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        let _ = proto::decode_request(&bytes);
        let _ = proto::decode_reply(&bytes);
        let _ = proto::decode_ioctl_reply(&bytes);
        let s = server();
        let mut out = Vec::new();
        if s.handle(&bytes, &mut out) {
            check_reply(&bytes, &out)?;
        }
    }

    #[test]
    fn requests_round_trip(h in header(), req in request(&DATA)) {
        let bytes = proto::encode_request(&h, &req);
        let m = proto::decode_request(&bytes).unwrap();
        prop_assert_eq!(m.header.len as usize, bytes.len());
        prop_assert_eq!((m.header.unique, m.header.nodeid, m.header.pid, m.header.total_extlen),
            (h.unique, h.nodeid, h.pid, h.total_extlen));
        prop_assert_eq!(m.request, req);
        let s = server();
        let mut out = Vec::new();
        if s.handle(&bytes, &mut out) {
            check_reply(&bytes, &out)?;
        }
    }

    #[test]
    fn valid_requests_with_bytes_flipped_never_panic(
        h in header(), req in request(&DATA),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = proto::encode_request(&h, &req);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let s = server();
        let mut out = Vec::new();
        if s.handle(&bytes, &mut out) {
            check_reply(&bytes, &out)?;
        }
        let short = &bytes[..cut.index(bytes.len())];
        if s.handle(short, &mut out) {
            check_reply(short, &out)?;
        }
    }

    #[test]
    fn replies_round_trip(unique in any::<u64>(),
        input in prop::collection::vec((any::<u64>(), any::<u64>()), 0..4),
        output in prop::collection::vec((any::<u64>(), any::<u64>()), 0..4),
        data in prop::collection::vec(any::<u8>(), 0..1300), result in any::<i32>()) {
        let iov = |v: &Vec<(u64, u64)>| v.iter().map(|&(base, len)| Iovec { base, len }).collect::<Vec<_>>();
        let (i, o) = (iov(&input), iov(&output));
        let mut out = Vec::new();
        proto::encode_reply(unique, &Reply::IoctlRetry { input: &i, output: &o }, &mut out);
        let r = proto::decode_reply(&out).unwrap();
        prop_assert_eq!(r.header.unique, unique);
        let d = proto::decode_ioctl_reply(&r.body).unwrap();
        prop_assert_eq!((d.input, d.output), (i, o));
        proto::encode_reply(unique, &Reply::Ioctl { result, data: &data }, &mut out);
        let d = proto::decode_ioctl_reply(&proto::decode_reply(&out).unwrap().body).unwrap();
        prop_assert_eq!((d.result, d.data), (result, data));
    }

    #[test]
    fn ptp_structs_round_trip_through_bytes(b in prop::collection::vec(any::<u8>(), 1216)) {
        prop_assert_eq!(ptp::sys_offset_bytes(&ptp::sys_offset_from(&b[..832])), &b[..832]);
        prop_assert_eq!(ptp::extended_bytes(&ptp::extended_from(&b)), &b[..]);
        prop_assert_eq!(ptp::precise_bytes(&ptp::precise_from(&b[..64])), &b[..64]);
        prop_assert_eq!(ptp::pin_desc_bytes(&ptp::pin_desc_from(&b[..96])), &b[..96]);
        prop_assert_eq!(ptp::caps_bytes(&ptp::caps_from(&b[..80])), &b[..80]);
    }
}
