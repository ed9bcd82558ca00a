//! The fq qdisc that `latency` faults need: the TCX egress program only
//! stamps each packet with its earliest departure time; fq holds it until
//! then. The agent makes fq the interface's root qdisc while a latency fault
//! uses the interface and deletes it afterwards, which restores the kernel's
//! default qdisc.
//!
//! A qdisc is not a bpf_link: it would survive the agent. So every interface
//! the agent gave an fq root is written to a file in the state directory,
//! and the next start removes those that still carry the agent's handle.
//!
//! The qdiscs are read, replaced and deleted over rtnetlink (a synchronous
//! `NETLINK_ROUTE` socket from `netlink-sys`, messages from
//! `netlink-packet-route`): the same requests `tc qdisc show/replace/del`
//! sends, without needing iproute2 or parsing its text.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use rtnl::{Qdisc, Rtnl};

/// Handle of the fq root qdiscs the agent installs (`fa17:`), so it removes
/// only its own.
const HANDLE: u32 = 0xfa17_0000;
/// Root qdiscs the kernel or a distribution sets up by default. Anything
/// else was configured by someone, and the agent does not replace it.
const DEFAULT_ROOTS: [&str; 5] = ["noqueue", "pfifo_fast", "fq_codel", "mq", "pfifo"];
/// fq's `limit` (packets in the qdisc) and `flow_limit` (per flow): room
/// for the packets a delayed flow holds at high rates.
const FQ_LIMIT: u32 = 100_000;
const FQ_FLOW_LIMIT: u32 = 10_000;

/// Why `latency` cannot run on this host, or None.
///
/// The kernel is asked: an fq root qdisc is created on `lo` in a private,
/// throw-away network namespace (which also loads `sch_fq` where it is a
/// module). Where no namespace can be made, the module lists decide.
pub fn unavailable_reason() -> Option<String> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    match fq_in_private_netns() {
        Ok(()) => None,
        Err(Probe::Refused(answer)) => Some(format!(
            "the fq qdisc is not available on kernel {release} (CONFIG_NET_SCH_FQ, module sch_fq): the kernel \
             refused an fq qdisc in a private network namespace: {answer}; latency needs fq to hold packets \
             until their departure time"
        )),
        Err(Probe::NotRun(why)) => {
            tracing::debug!(error = %why, "could not ask the kernel for fq; reading the module lists");
            modules_have_fq(&release)
        }
    }
}

enum Probe {
    /// The kernel refused the fq qdisc.
    Refused(String),
    /// The question could not be asked (no namespace, no socket).
    NotRun(String),
}

fn fq_in_private_netns() -> Result<(), Probe> {
    // unshare() moves only the calling thread; the namespace goes away with
    // the thread and the socket.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Probe::NotRun(format!("unshare(CLONE_NEWNET): {e}")))?;
        let mut rtnl = Rtnl::open().map_err(|e| Probe::NotRun(e.to_string()))?;
        // The loopback device is index 1 in every network namespace.
        rtnl.replace_fq(1, HANDLE, FQ_LIMIT, FQ_FLOW_LIMIT)
            .map_err(|e| Probe::Refused(e.to_string()))
    })
    .join()
    .unwrap_or_else(|_| Err(Probe::NotRun("the probe thread panicked".into())))
}

/// The fallback: sch_fq loaded, built in, or a module of this kernel.
fn modules_have_fq(release: &str) -> Option<String> {
    if Path::new("/sys/module/sch_fq").exists() {
        return None;
    }
    let dir = PathBuf::from("/lib/modules").join(release);
    for list in ["modules.builtin", "modules.dep"] {
        if std::fs::read_to_string(dir.join(list)).is_ok_and(|t| t.contains("/sch_fq.ko")) {
            return None;
        }
    }
    Some(format!(
        "the fq qdisc is not available on kernel {release} (sch_fq is neither loaded, built in, nor a module \
         under {}; CONFIG_NET_SCH_FQ): latency needs fq to hold packets until their departure time",
        dir.display()
    ))
}

/// A handle as tc prints it: `fa17:`, `1:2`.
fn handle_text(handle: u32) -> String {
    match handle & 0xffff {
        0 => format!("{:x}:", handle >> 16),
        minor => format!("{:x}:{minor:x}", handle >> 16),
    }
}

/// The root qdisc of `ifindex`, for messages named `ifname`.
fn root_qdisc(rtnl: &mut Rtnl, ifindex: u32, ifname: &str) -> Result<Qdisc, String> {
    rtnl.root_qdisc(ifindex)
        .map_err(|e| format!("reading the root qdisc of {ifname}: {e}"))?
        .ok_or_else(|| format!("no root qdisc reported for {ifname}"))
}

/// Deletes the root qdisc of `ifindex` if it is still the agent's fq.
fn remove_own(ifindex: u32, ifname: &str) -> Result<bool, String> {
    let mut rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    match root_qdisc(&mut rtnl, ifindex, ifname) {
        Ok(q) if q.kind == "fq" && q.handle == HANDLE => {
            rtnl.delete_root(ifindex)
                .map_err(|e| format!("deleting the root qdisc of {ifname}: {e}"))?;
            Ok(true)
        }
        // The interface is gone, or someone replaced our qdisc.
        _ => Ok(false),
    }
}

struct Entry {
    ifname: String,
    users: usize,
    /// The agent installed this fq (and removes it with the last user).
    owned: bool,
}

/// Why an fq root qdisc could not be put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QdiscError {
    /// Someone configured another root qdisc, which the agent leaves alone.
    Configured(String),
    /// The kernel refused, or could not be asked.
    Failed(String),
}

pub struct FqManager {
    record: PathBuf,
    entries: BTreeMap<u32, Entry>,
}

impl FqManager {
    /// Removes fq roots a previous agent left behind (it died before it
    /// could), then starts with none.
    pub fn new(state_dir: &Path) -> Self {
        let record = state_dir.join("fq-interfaces");
        if let Ok(text) = std::fs::read_to_string(&record) {
            for ifname in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                // Recorded by name: an interface that is gone has no index.
                let Ok(ifindex) = nix::net::if_::if_nametoindex(ifname) else {
                    continue;
                };
                match remove_own(ifindex, ifname) {
                    Ok(true) => tracing::warn!(
                        interface = ifname,
                        "removed the fq qdisc a previous agent left behind"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(interface = ifname, error = %e, "could not remove a stale fq qdisc")
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&record);
        Self {
            record,
            entries: BTreeMap::new(),
        }
    }

    fn save(&self) {
        let text: String = self
            .entries
            .values()
            .filter(|e| e.owned)
            .map(|e| format!("{}\n", e.ifname))
            .collect();
        if let Err(e) = std::fs::write(&self.record, text) {
            tracing::warn!(file = %self.record.display(), error = %e, "recording fq interfaces failed");
        }
    }

    /// Makes sure `ifname` has an fq root qdisc while someone needs it.
    pub fn acquire(&mut self, ifindex: u32, ifname: &str) -> Result<(), QdiscError> {
        if let Some(e) = self.entries.get_mut(&ifindex) {
            e.users += 1;
            return Ok(());
        }
        let mut rtnl = Rtnl::open().map_err(|e| QdiscError::Failed(e.to_string()))?;
        let kind = root_qdisc(&mut rtnl, ifindex, ifname)
            .map_err(QdiscError::Failed)?
            .kind;
        let owned = if kind == "fq" {
            // Someone runs fq already: use it, leave it in place afterwards.
            false
        } else if DEFAULT_ROOTS.contains(&kind.as_str()) {
            // Recorded first, so a crash between the two leaves a record.
            self.entries.insert(
                ifindex,
                Entry {
                    ifname: ifname.to_owned(),
                    users: 1,
                    owned: true,
                },
            );
            self.save();
            if let Err(e) = rtnl.replace_fq(ifindex, HANDLE, FQ_LIMIT, FQ_FLOW_LIMIT) {
                self.entries.remove(&ifindex);
                self.save();
                return Err(QdiscError::Failed(format!(
                    "replacing the root qdisc of {ifname} ({kind}) by fq {}: {e}",
                    handle_text(HANDLE)
                )));
            }
            tracing::info!(interface = ifname, replaced = %kind, "installed the fq root qdisc");
            return Ok(());
        } else {
            return Err(QdiscError::Configured(format!(
                "{ifname} has a configured root qdisc ({kind}); latency needs fq as the root qdisc and the agent \
                 does not replace a qdisc someone set up"
            )));
        };
        self.entries.insert(
            ifindex,
            Entry {
                ifname: ifname.to_owned(),
                users: 1,
                owned,
            },
        );
        Ok(())
    }

    pub fn release(&mut self, ifindex: u32) {
        let Some(e) = self.entries.get_mut(&ifindex) else {
            return;
        };
        e.users = e.users.saturating_sub(1);
        if e.users > 0 {
            return;
        }
        let e = self.entries.remove(&ifindex).expect("present");
        if e.owned {
            if let Err(err) = remove_own(ifindex, &e.ifname) {
                tracing::warn!(interface = %e.ifname, error = %err, "removing the fq qdisc failed");
            }
            self.save();
        }
    }
}

impl Drop for FqManager {
    fn drop(&mut self) {
        let owned: Vec<u32> = self.entries.keys().copied().collect();
        for ifindex in owned {
            if let Some(e) = self.entries.get_mut(&ifindex) {
                e.users = 1;
            }
            self.release(ifindex);
        }
    }
}

/// The three rtnetlink requests the agent makes, over a synchronous socket.
mod rtnl {
    use std::{fmt, time::Duration};

    use netlink_packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    };
    use netlink_packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    };
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    /// `TCA_FQ_PLIMIT` and `TCA_FQ_FLOW_PLIMIT` (linux/pkt_sched.h), which
    /// netlink-packet-route has no types for.
    const TCA_FQ_PLIMIT: u16 = 1;
    const TCA_FQ_FLOW_PLIMIT: u16 = 2;
    /// `NLMSGERR_ATTR_MSG`: the kernel's extended-ack text.
    const NLMSGERR_ATTR_MSG: u16 = 1;
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    /// The kernel always answers; this only bounds a wait that never ends.
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A refusal from the kernel (errno and its extended-ack text), or a
    /// socket or decoding failure.
    #[derive(Debug)]
    pub enum Error {
        Kernel { errno: i32, text: Option<String> },
        Io(String),
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::Kernel { errno, text } => {
                    let errno = nix::errno::Errno::from_raw(*errno);
                    match text {
                        Some(t) => write!(f, "{t} ({errno:?})"),
                        None => write!(f, "{errno:?}: {}", errno.desc()),
                    }
                }
                Self::Io(e) => f.write_str(e),
            }
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Qdisc {
        pub kind: String,
        pub handle: u32,
    }

    pub struct Rtnl {
        socket: Socket,
        seq: u32,
    }

    impl Rtnl {
        /// A rtnetlink socket in the calling thread's network namespace.
        pub fn open() -> Result<Self, Error> {
            let io = |what: &str| {
                let what = what.to_owned();
                move |e: std::io::Error| Error::Io(format!("rtnetlink socket: {what}: {e}"))
            };
            let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("socket"))?;
            socket.bind_auto().map_err(io("bind"))?;
            socket.set_ext_ack(true).map_err(io("NETLINK_EXT_ACK"))?;
            socket.set_cap_ack(true).map_err(io("NETLINK_CAP_ACK"))?;
            // Dumps filtered by the kernel where it can (4.20+); the
            // answer is filtered here as well.
            let _ = socket.set_netlink_get_strict_chk(true);
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::ReceiveTimeout,
                &nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as _, 0),
            )
            .map_err(|e| Error::Io(format!("rtnetlink socket: SO_RCVTIMEO: {e}")))?;
            Ok(Self { socket, seq: 0 })
        }

        /// `tc qdisc show dev IF root`: kind and handle of the root qdisc,
        /// None when the kernel reports none (a device that is down).
        pub fn root_qdisc(&mut self, ifindex: u32) -> Result<Option<Qdisc>, Error> {
            let answer = self.request(get_qdiscs(ifindex), NLM_F_REQUEST | NLM_F_DUMP)?;
            Ok(root_of(answer, ifindex))
        }

        /// `tc qdisc replace dev IF root handle H fq limit L flow_limit F`.
        pub fn replace_fq(
            &mut self,
            ifindex: u32,
            handle: u32,
            limit: u32,
            flow_limit: u32,
        ) -> Result<(), Error> {
            self.request(
                new_fq(ifindex, handle, limit, flow_limit),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map(drop)
        }

        /// `tc qdisc del dev IF root`.
        pub fn delete_root(&mut self, ifindex: u32) -> Result<(), Error> {
            self.request(del_root(ifindex), NLM_F_REQUEST | NLM_F_ACK)
                .map(drop)
        }

        /// Sends one request and collects the answer: the messages of a
        /// dump up to NLMSG_DONE, or the ACK of a change.
        fn request(
            &mut self,
            msg: RouteNetlinkMessage,
            flags: u16,
        ) -> Result<Vec<RouteNetlinkMessage>, Error> {
            self.seq = self.seq.wrapping_add(1);
            let bytes = serialize(msg, flags, self.seq);
            let kernel = SocketAddr::new(0, 0);
            self.socket
                .send_to(&bytes, &kernel, 0)
                .map_err(|e| Error::Io(format!("rtnetlink send: {e}")))?;
            let mut out = Vec::new();
            loop {
                let (buf, _) = self
                    .socket
                    .recv_from_full()
                    .map_err(|e| Error::Io(format!("rtnetlink receive: {e}")))?;
                if let Some(done) = parse_answer(&buf, self.seq, &mut out)? {
                    return done.map(|()| out);
                }
            }
        }
    }

    fn tc_message(ifindex: u32, handle: u32, attributes: Vec<TcAttribute>) -> TcMessage {
        let mut m = TcMessage::with_index(ifindex as i32);
        m.header.handle = handle.into();
        m.header.parent = TcHandle::ROOT;
        m.attributes = attributes;
        m
    }

    pub(super) fn get_qdiscs(ifindex: u32) -> RouteNetlinkMessage {
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::with_index(ifindex as i32))
    }

    pub(super) fn new_fq(
        ifindex: u32,
        handle: u32,
        limit: u32,
        flow_limit: u32,
    ) -> RouteNetlinkMessage {
        let opt = |kind, v: u32| TcOption::Other(DefaultNla::new(kind, v.to_ne_bytes().to_vec()));
        RouteNetlinkMessage::NewQueueDiscipline(tc_message(
            ifindex,
            handle,
            vec![
                TcAttribute::Kind("fq".into()),
                TcAttribute::Options(vec![
                    opt(TCA_FQ_PLIMIT, limit),
                    opt(TCA_FQ_FLOW_PLIMIT, flow_limit),
                ]),
            ],
        ))
    }

    pub(super) fn del_root(ifindex: u32) -> RouteNetlinkMessage {
        RouteNetlinkMessage::DelQueueDiscipline(tc_message(ifindex, 0, Vec::new()))
    }

    pub(super) fn serialize(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut bytes = vec![0; nl.buffer_len()];
        nl.serialize(&mut bytes);
        bytes
    }

    /// The root qdisc of `ifindex` among the qdiscs of a dump.
    pub(super) fn root_of(answer: Vec<RouteNetlinkMessage>, ifindex: u32) -> Option<Qdisc> {
        answer.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q)
                if q.header.index == ifindex as i32 && q.header.parent == TcHandle::ROOT =>
            {
                let kind = q.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })?;
                Some(Qdisc {
                    kind,
                    handle: q.header.handle.into(),
                })
            }
            _ => None,
        })
    }

    /// Reads the netlink messages of one datagram answering request `seq`
    /// into `out`. Some(Ok) at the end of the answer (ACK or NLMSG_DONE),
    /// Some(Err) for the kernel's refusal, None when more is to come.
    pub(super) fn parse_answer(
        mut buf: &[u8],
        seq: u32,
        out: &mut Vec<RouteNetlinkMessage>,
    ) -> Result<Option<Result<(), Error>>, Error> {
        while buf.len() >= 16 {
            let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len < 16 || len > buf.len() {
                return Err(Error::Io(format!(
                    "rtnetlink: a message of {len} bytes in a datagram of {}",
                    buf.len()
                )));
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len])
                .map_err(|e| Error::Io(format!("rtnetlink: decoding the kernel's answer: {e}")))?;
            buf = &buf[(len + 3) & !3usize..];
            if msg.header.sequence_number != seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(d) if d.code == 0 => return Ok(Some(Ok(()))),
                NetlinkPayload::Done(d) => {
                    return Ok(Some(Err(Error::Kernel {
                        errno: -d.code,
                        text: None,
                    })));
                }
                NetlinkPayload::Error(e) => match e.code {
                    None => return Ok(Some(Ok(()))),
                    Some(code) => {
                        return Ok(Some(Err(Error::Kernel {
                            errno: -code.get(),
                            text: ext_ack_text(msg.header.flags, &e.header),
                        })));
                    }
                },
                _ => {}
            }
        }
        Ok(None)
    }

    /// The text of an NLMSG_ERROR's extended ack: after the echoed request
    /// (its header only, with NETLINK_CAP_ACK) come attributes.
    fn ext_ack_text(flags: u16, payload: &[u8]) -> Option<String> {
        if flags & NLM_F_ACK_TLVS == 0 {
            return None;
        }
        let echoed = if flags & NLM_F_CAPPED != 0 {
            16
        } else {
            u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize
        };
        let tlvs = payload.get((echoed + 3) & !3usize..)?;
        NlasIterator::new(tlvs)
            .filter_map(Result::ok)
            .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
            .map(|nla| {
                let v = nla.value();
                let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                String::from_utf8_lossy(&v[..end])
                    .trim_end_matches('.')
                    .to_owned()
            })
    }
}

#[cfg(test)]
mod tests {
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
        let state =
            std::env::temp_dir().join(format!("faultline-qdisc-test-{}", std::process::id()));
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
}
