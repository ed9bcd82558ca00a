//! The fq qdisc over rtnetlink: the bytes against tc's, answers parsed,
//! and the real kernel in a private network namespace.

use super::{DEFAULT_ROOTS, FQ_FLOW_LIMIT, FQ_LIMIT, FqManager, HANDLE, QdiscError, rtnl};

/// What `tc qdisc replace dev lo root handle fa17: fq limit 100000
/// flow_limit 10000` sends (captured with strace from iproute2 6.x),
/// with lo's index 1 and sequence number 7.
const TC_REPLACE_FQ: [u8; 64] = [
    64, 0, 0, 0, // nlmsg_len
    36, 0, // RTM_NEWQDISC
    0x05, 0x05, // NLM_F_REQUEST|NLM_F_ACK|NLM_F_REPLACE|NLM_F_CREATE
    7, 0, 0, 0, // seq
    0, 0, 0, 0, // pid
    0, 0, 0, 0, // tcm_family, pad
    1, 0, 0, 0, // tcm_ifindex
    0, 0, 0x17, 0xfa, // tcm_handle fa17:
    0xff, 0xff, 0xff, 0xff, // tcm_parent TC_H_ROOT
    0, 0, 0, 0, // tcm_info
    7, 0, 1, 0, b'f', b'q', 0, 0, // TCA_KIND "fq"
    20, 0, 2, 0, // TCA_OPTIONS
    8, 0, 1, 0, 0xa0, 0x86, 0x01, 0x00, // TCA_FQ_PLIMIT 100000
    8, 0, 2, 0, 0x10, 0x27, 0x00, 0x00, // TCA_FQ_FLOW_PLIMIT 10000
];

#[test]
fn the_fq_request_is_the_one_tc_sends() {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
    let bytes = rtnl::serialize(
        rtnl::new_fq(1, HANDLE, FQ_LIMIT, FQ_FLOW_LIMIT),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        7,
    );
    assert_eq!(bytes, TC_REPLACE_FQ);
}

#[test]
fn delete_and_dump_requests() {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
    let del = rtnl::serialize(rtnl::del_root(3), NLM_F_REQUEST | NLM_F_ACK, 1);
    assert_eq!(&del[4..8], &[37, 0, 5, 0], "RTM_DELQDISC, REQUEST|ACK");
    assert_eq!(
        &del[20..36],
        &[3, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]
    );
    let get = rtnl::serialize(rtnl::get_qdiscs(3), NLM_F_REQUEST | NLM_F_DUMP, 1);
    assert_eq!(&get[4..8], &[38, 0, 1, 3], "RTM_GETQDISC, REQUEST|DUMP");
    assert_eq!(&get[20..24], &[3, 0, 0, 0]);
}

/// A dump answer in the layout the kernel sends (the live one is read in
/// `against_the_kernel_in_a_private_netns`), cut down to TCA_KIND: lo
/// (index 1, noqueue), an interface with index 2 whose root is `htb 1:`
/// with an fq_codel child, then NLMSG_DONE.
fn dump() -> Vec<u8> {
    fn qdisc(seq: u32, ifindex: i32, handle: u32, parent: u32, kind: &str) -> Vec<u8> {
        let mut kind_nla = vec![0; 4];
        kind_nla.extend(kind.as_bytes());
        kind_nla.push(0);
        let kind_len = kind_nla.len() as u16;
        kind_nla[..2].copy_from_slice(&kind_len.to_ne_bytes());
        kind_nla[2..4].copy_from_slice(&1u16.to_ne_bytes());
        while !kind_nla.len().is_multiple_of(4) {
            kind_nla.push(0);
        }
        let mut m = Vec::new();
        m.extend(((16 + 20 + kind_nla.len()) as u32).to_ne_bytes());
        m.extend(36u16.to_ne_bytes()); // RTM_NEWQDISC
        m.extend(2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend([0, 0, 0, 0]);
        m.extend(ifindex.to_ne_bytes());
        m.extend(handle.to_ne_bytes());
        m.extend(parent.to_ne_bytes());
        m.extend(2u32.to_ne_bytes()); // refcnt
        m.extend(kind_nla);
        m
    }
    let mut d = qdisc(9, 1, 0, 0xffff_ffff, "noqueue");
    d.extend(qdisc(9, 2, 0x0001_0000, 0xffff_ffff, "htb"));
    d.extend(qdisc(9, 2, 0x8001_0000, 0x0001_0001, "fq_codel"));
    // NLMSG_DONE with error 0.
    d.extend(20u32.to_ne_bytes());
    d.extend(3u16.to_ne_bytes());
    d.extend(2u16.to_ne_bytes());
    d.extend(9u32.to_ne_bytes());
    d.extend(0u32.to_ne_bytes());
    d.extend(0i32.to_ne_bytes());
    d
}

#[test]
fn the_root_qdisc_of_one_interface_from_a_dump() {
    let mut out = Vec::new();
    let end = rtnl::parse_answer(&dump(), 9, &mut out).expect("decodes");
    assert!(matches!(end, Some(Ok(()))));
    assert_eq!(out.len(), 3);
    let root = rtnl::root_of(out.clone(), 2).expect("a root");
    assert_eq!((root.kind.as_str(), root.handle), ("htb", 0x0001_0000));
    assert_eq!(rtnl::root_of(out.clone(), 1).unwrap().kind, "noqueue");
    assert_eq!(rtnl::root_of(out, 5), None);
    // Another request's answer is skipped.
    let mut out = Vec::new();
    assert!(matches!(rtnl::parse_answer(&dump(), 8, &mut out), Ok(None)));
    assert!(out.is_empty());
}

#[test]
fn a_refusal_carries_the_kernels_text() {
    // NLMSG_ERROR, flags CAPPED|ACK_TLVS, -ENOENT, the echoed header,
    // then NLMSGERR_ATTR_MSG.
    let text = b"Specified qdisc kind is unknown.\0";
    let mut nla = Vec::new();
    nla.extend(((4 + text.len()) as u16).to_ne_bytes());
    nla.extend(1u16.to_ne_bytes());
    nla.extend(text);
    while !nla.len().is_multiple_of(4) {
        nla.push(0);
    }
    let mut m = Vec::new();
    m.extend(((16 + 4 + 16 + nla.len()) as u32).to_ne_bytes());
    m.extend(2u16.to_ne_bytes());
    m.extend(0x300u16.to_ne_bytes());
    m.extend(4u32.to_ne_bytes());
    m.extend(0u32.to_ne_bytes());
    m.extend((-libc::ENOENT).to_ne_bytes());
    m.extend(&TC_REPLACE_FQ[..16]);
    m.extend(nla);
    let mut out = Vec::new();
    let Ok(Some(Err(e))) = rtnl::parse_answer(&m, 4, &mut out) else {
        panic!("a refusal");
    };
    assert_eq!(e.to_string(), "Specified qdisc kind is unknown (ENOENT)");
}

/// Runs `f` in a thread of its own in a new network namespace, or
/// returns None where none can be made (not root).
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .ok()
            .map(|()| f())
    })
    .join()
    .expect("no panic")
}

fn tc(args: &[&str]) {
    let out = std::process::Command::new("tc")
        .args(args)
        .output()
        .expect("tc runs");
    assert!(out.status.success(), "tc {args:?}: {out:?}");
}

/// Against the running kernel, in a private network namespace: the
/// root qdisc read over netlink is the one tc set, a configured one is
/// left alone, and fq is installed where the kernel has it.
#[test]
fn against_the_kernel_in_a_private_netns() {
    let fq_missing = super::unavailable_reason();
    let state = std::env::temp_dir().join(format!("faultline-qdisc-test-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let dir = state.clone();
    let ran = in_private_netns(move || {
        let mut r = rtnl::Rtnl::open().expect("socket");
        // lo is down: the kernel reports no root qdisc.
        assert_eq!(r.root_qdisc(1).expect("dump"), None);
        std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip runs");
        let q = r.root_qdisc(1).expect("dump").expect("a root");
        assert_eq!(q.kind, "noqueue");
        assert!(DEFAULT_ROOTS.contains(&q.kind.as_str()));

        let mut fq = FqManager::new(&dir);
        match (&fq_missing, fq.acquire(1, "lo")) {
            (None, Ok(())) => {
                let q = r.root_qdisc(1).unwrap().unwrap();
                assert_eq!((q.kind.as_str(), q.handle), ("fq", HANDLE));
                assert_eq!(
                    std::fs::read_to_string(dir.join("fq-interfaces")).unwrap(),
                    "lo\n"
                );
                fq.release(1);
                assert_eq!(r.root_qdisc(1).unwrap().unwrap().kind, "noqueue");
            }
            (Some(_), Err(QdiscError::Failed(e))) => {
                assert!(
                    e.starts_with("replacing the root qdisc of lo (noqueue) by fq fa17:"),
                    "{e}"
                );
                // The record is taken back.
                assert_eq!(
                    std::fs::read_to_string(dir.join("fq-interfaces")).unwrap(),
                    ""
                );
            }
            other => panic!("fq probe and acquire disagree: {other:?}"),
        }

        tc(&["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"]);
        let q = r.root_qdisc(1).unwrap().unwrap();
        assert_eq!((q.kind.as_str(), q.handle), ("htb", 0x0001_0000));
        let Err(QdiscError::Configured(e)) = fq.acquire(1, "lo") else {
            panic!("htb is configured");
        };
        assert!(e.starts_with("lo has a configured root qdisc (htb)"), "{e}");
        r.delete_root(1).expect("deletes htb");
        assert_eq!(r.root_qdisc(1).unwrap().unwrap().kind, "noqueue");
        // The kernel's refusal comes back with its text.
        let e = r.delete_root(1).unwrap_err();
        assert!(
            matches!(&e, rtnl::Error::Kernel { errno, text: Some(_) } if *errno == libc::ENOENT),
            "{e:?}"
        );
    });
    std::fs::remove_dir_all(&state).unwrap();
    if ran.is_none() {
        eprintln!("skipped: no private network namespace (not root)");
    }
}

/// This host's kernel (6.18 without CONFIG_NET_SCH_FQ) has no fq:
/// the reason says so in the kernel's words.
#[test]
fn unavailable_reason_names_the_kernels_answer() {
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy();
    let Some(reason) = super::unavailable_reason() else {
        return; // a kernel with fq
    };
    assert!(reason.contains(&*release), "{reason}");
    assert!(reason.contains("CONFIG_NET_SCH_FQ"), "{reason}");
    if in_private_netns(|| ()).is_some() {
        assert!(
            reason.contains("Specified qdisc kind is unknown"),
            "{reason}"
        );
    }
}
