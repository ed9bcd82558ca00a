//! The three rtnetlink requests the agent makes, over a synchronous socket.

use std::{fmt, time::Duration};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NlasIterator,
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
