//! Field offsets of kernel structs, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! rustc emits no CO-RE relocations for the BPF target, so the LSM programs
//! read kernel structs at offsets the agent finds here at start-up and
//! writes into `FL_KOFFS`.
//!
//! The parsing is done by the `btfparse` crate; this module only names the
//! members the programs need and turns a missing struct or member into an
//! error that says which one. aya's own BTF (`aya_obj::btf::Btf`) was
//! considered first, as the agent loads it anyway, and rejected: its
//! `type_by_id` and the members of its struct types are `pub(crate)`, so a
//! member offset cannot be read through its public API.

use std::collections::HashMap;

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};
use faultline_common::{KernelOffsets, runq::RunqConfig};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no member {1} ({2})")]
    NoMember(String, String, String),
    #[error("kernel BTF: tracepoint {0} has an unexpected prototype: {1}")]
    Prototype(String, String),
    #[error(
        "kernel BTF: struct {0} member {1} is a bitfield (bit {2}, {3} bits), not a byte offset"
    )]
    Bitfield(String, String, u32, u32),
}

/// The whole BTF blob in memory: btfparse reads it in many small pieces.
struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(buffer.len());
        match self.0.get(start..end) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                "read past the end of the BTF data",
            )),
        }
    }
}

pub struct Btf {
    types: TypeInformation,
    /// Name → id of the first struct of that name that has members (a
    /// vmlinux may also hold forward declarations and same-named types of
    /// other kinds; btfparse's `id_of` returns the last of any kind).
    structs: HashMap<String, u32>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| BtfError::Io(path.into(), e))?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let types = TypeInformation::new(&Bytes(data))
            .map_err(|e| BtfError::Malformed(format!("{:?}: {}", e.kind(), e.message())))?;
        let mut structs = HashMap::new();
        for (id, t) in types.get() {
            if let TypeVariant::Struct(s) = t
                && !s.member_list().is_empty()
                && let Some(name) = s.name()
            {
                structs.entry(name.clone()).or_insert(*id);
            }
        }
        Ok(Self { types, structs })
    }

    /// Byte offset of a dotted member path, e.g. `("file", "f_path.dentry")`,
    /// looking inside anonymous struct and union members.
    pub fn offset(&self, strct: &str, path: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(strct)
            .ok_or_else(|| BtfError::NoStruct(strct.into()))?;
        self.offset_in(id, strct, path)
    }

    fn offset_in(&self, id: u32, strct: &str, path: &str) -> Result<u32, BtfError> {
        match self.types.offset_of(id, path) {
            Ok((_, Offset::ByteOffset(bytes))) => Ok(bytes),
            Ok((_, Offset::BitOffsetAndSize(bit, size))) => {
                Err(BtfError::Bitfield(strct.into(), path.into(), bit, size))
            }
            Err(e) => Err(BtfError::NoMember(
                strct.into(),
                path.into(),
                e.message().to_owned(),
            )),
        }
    }

    /// Every offset the LSM programs need.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            valid: 1,
            file_dentry: self.offset("file", "f_path.dentry")?,
            dentry_parent: self.offset("dentry", "d_parent")?,
            dentry_inode: self.offset("dentry", "d_inode")?,
            inode_ino: self.offset("inode", "i_ino")?,
            inode_sb: self.offset("inode", "i_sb")?,
            inode_mode: self.offset("inode", "i_mode")?,
            sb_dev: self.offset("super_block", "s_dev")?,
            bprm_file: self.offset("linux_binprm", "file")?,
            vma_file: self.offset("vm_area_struct", "vm_file")?,
            socket_sk: self.offset("socket", "sk")?,
            sock_num: self.offset("sock", "__sk_common.skc_num")?,
            inode_generation: self.offset("inode", "i_generation")?,
        })
    }
}

impl Btf {
    /// Where the run-queue programs read a task's ids, after checking that
    /// `sched_switch` passes (bool preempt, prev, next, unsigned int
    /// prev_state) as they assume (5.18 and later; earlier kernels have no
    /// prev_state, and another order would make them read garbage).
    pub fn runq_config(&self) -> Result<RunqConfig, BtfError> {
        self.check_sched_switch()?;
        Ok(RunqConfig {
            task_pid: self.offset("task_struct", "pid")?,
            task_tgid: self.offset("task_struct", "tgid")?,
        })
    }

    fn check_sched_switch(&self) -> Result<(), BtfError> {
        let tp = "sched_switch";
        let bad = |why: String| BtfError::Prototype(tp.into(), why);
        let t = &self.types;
        // btf_trace_<tp> is a typedef of a pointer to the handler's
        // prototype: (void *__data, <the tracepoint's arguments>).
        let proto = t
            .id_of("btf_trace_sched_switch")
            .and_then(|id| t.pointee_tid(id).ok())
            .and_then(|id| t.from_id(id));
        let Some(TypeVariant::FuncProto(proto)) = proto else {
            return Err(bad("no btf_trace_sched_switch prototype".into()));
        };
        // (btfparse does not export its Parameter type, so no method path.)
        let mut params = Vec::new();
        for p in proto.parameter_list() {
            params.push(p.tid());
        }
        if params.len() != 5 {
            return Err(bad(format!(
                "{} arguments, expected 4 (preempt, prev, next, prev_state)",
                params.len().saturating_sub(1)
            )));
        }
        let size = |i: usize| t.size_of(params[i]).ok();
        let task = |i: usize| {
            t.pointee_tid(params[i])
                .ok()
                .and_then(|id| t.name_of(id))
                .is_some_and(|n| n == "task_struct")
        };
        if size(1) != Some(1) || !task(2) || !task(3) || size(4) != Some(4) {
            return Err(bad(
                "expected (bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Btf, BtfError};

    /// The running kernel's `sched_switch` has the prototype the run-queue
    /// programs read, and task ids sit where a task_struct keeps them
    /// (after the scheduler's state, far from the start).
    #[test]
    fn runq_config_from_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("this host has /sys/kernel/btf/vmlinux");
        let c = btf.runq_config().expect("sched_switch as expected");
        assert!(c.task_pid > 256 && c.task_tgid == c.task_pid + 4, "{c:?}");
    }

    /// Every (struct, member path) `kernel_offsets` reads.
    const FIELDS: [(&str, &str); 11] = [
        ("file", "f_path.dentry"),
        ("dentry", "d_parent"),
        ("dentry", "d_inode"),
        ("inode", "i_ino"),
        ("inode", "i_sb"),
        ("inode", "i_mode"),
        ("super_block", "s_dev"),
        ("linux_binprm", "file"),
        ("vm_area_struct", "vm_file"),
        ("socket", "sk"),
        ("sock", "__sk_common.skc_num"),
    ];

    /// The running kernel's BTF parses and yields plausible offsets (every
    /// kernel this agent supports has BTF; the test host does).
    ///
    /// The offsets themselves depend on the kernel's version and config, so
    /// they are checked against bounds and against a second lookup path:
    /// btfparse's own name lookup (`id_of`) instead of this module's first
    /// struct with members. On the 6.18 test host the hand-written reader
    /// this module replaced gave the same numbers: file_dentry 72,
    /// dentry_parent 24, dentry_inode 48, inode_ino 64, inode_sb 40,
    /// inode_mode 0, sb_dev 16, bprm_file 64, vma_file 88, socket_sk 24,
    /// sock_num 14.
    #[test]
    fn offsets_from_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("this host has /sys/kernel/btf/vmlinux");
        let o = btf.kernel_offsets().expect("all fields found");
        assert_eq!(o.valid, 1);
        // dentry.d_parent follows d_flags, d_seq and d_hash: never at 0.
        assert!(o.dentry_parent > 0 && o.dentry_parent < 64, "{o:?}");
        // file.f_path.dentry is the second word of f_path.
        assert!(o.file_dentry >= 8 && o.file_dentry < 256, "{o:?}");
        assert!(
            o.file_dentry.is_multiple_of(8) && o.inode_sb.is_multiple_of(8),
            "{o:?}"
        );
        // skc_num sits in sock_common's first 16 bytes (after the addresses and hash).
        assert!(o.sock_num >= 8 && o.sock_num < 32, "{o:?}");
        // i_mode is the first member of struct inode.
        assert_eq!(o.inode_mode, 0, "{o:?}");

        for (strct, path) in FIELDS {
            let ours = btf.offset(strct, path).expect("found");
            let id = btf.types.id_of(strct).expect("named type");
            let theirs = btf.offset_in(id, strct, path).expect("found by id_of");
            assert_eq!(ours, theirs, "{strct}.{path}");
        }

        assert!(matches!(
            btf.offset("file", "no_such_member"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.offset("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    /// A small BTF blob with the shapes the kernel's structs use: a nested
    /// struct, an anonymous union, a bitfield, a forward declaration.
    fn blob() -> Vec<u8> {
        let mut strings = b"\0".to_vec();
        let mut name = |s: &str| {
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let (int, inner, outer, x, a, b, head, flags) = (
            name("int"),
            name("inner"),
            name("outer"),
            name("x"),
            name("u_a"),
            name("u_b"),
            name("head"),
            name("flags"),
        );
        let info = |kind: u32, kind_flag: bool, vlen: u32| {
            (kind << 24) | (u32::from(kind_flag) << 31) | vlen
        };
        let mut types: Vec<u32> = Vec::new();
        // 1: int, 4 bytes, signed, 32 bits.
        types.extend([int, info(1, false, 0), 4, (1 << 24) | 32]);
        // 2: struct inner { int pad; int x; }, x at byte 4.
        types.extend([inner, info(4, false, 2), 8, head, 1, 0, x, 1, 32]);
        // 3: union { int u_a; struct inner u_b; }.
        types.extend([0, info(5, false, 2), 8, a, 1, 0, b, 2, 0]);
        // 4: struct outer { int head; union {..}; int flags:3; } with
        // kind_flag: member offsets carry bitfield sizes.
        types.extend([
            outer,
            info(4, true, 3),
            24,
            head,
            1,
            0,
            0,
            3,
            64,
            flags,
            1,
            (3 << 24) | 160,
        ]);
        // 5: a forward declaration of outer, after the definition.
        types.extend([outer, info(7, false, 0), 0]);
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();

        let mut out = Vec::new();
        out.extend(0xeb9f_u16.to_le_bytes());
        out.extend([1, 0]); // version, flags
        for w in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(w.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn members_through_nesting_and_anonymous_unions() {
        let btf = Btf::parse(&blob()).expect("parses");
        assert_eq!(btf.offset("outer", "head").unwrap(), 0);
        assert_eq!(btf.offset("outer", "u_a").unwrap(), 8);
        assert_eq!(btf.offset("outer", "u_b.x").unwrap(), 12);
        assert_eq!(btf.offset("inner", "x").unwrap(), 4);
        // btfparse's name lookup finds the later forward declaration; ours
        // the definition.
        assert_eq!(btf.types.id_of("outer"), Some(5));
    }

    #[test]
    fn errors_name_the_struct_and_member() {
        let btf = Btf::parse(&blob()).expect("parses");
        let e = btf.offset("outer", "u_b.y").unwrap_err();
        assert!(matches!(e, BtfError::NoMember(..)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("kernel BTF: struct outer has no member u_b.y"),
            "{e}"
        );
        let e = btf.offset("outer", "flags").unwrap_err();
        assert!(matches!(e, BtfError::Bitfield(_, _, 160, 3)), "{e:?}");
        assert_eq!(
            btf.offset("socket", "sk").unwrap_err().to_string(),
            "kernel BTF has no struct socket"
        );
        let e = Btf::parse(b"not BTF at all").err().expect("refused");
        assert!(matches!(e, BtfError::Malformed(_)), "{e:?}");
    }
}
