//! Field offsets of kernel structs, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! rustc emits no CO-RE relocations for the BPF target, so the LSM programs
//! read kernel structs at offsets the agent finds here at start-up and
//! writes into `FL_KOFFS`. Only what that needs is parsed: the type section,
//! struct and union members, and the modifiers and typedefs in between.

use std::collections::HashMap;

use faultline_common::KernelOffsets;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
}

struct Member {
    name: u32,
    ty: u32,
    /// Bit offset within the struct.
    bits: u32,
}

struct Type {
    kind: u32,
    name: u32,
    /// Referenced type for modifiers and typedefs.
    ty: u32,
    members: Vec<Member>,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|e| BtfError::Io(path.into(), e))?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let bad = BtfError::Malformed;
        if u16_at(data, 0) != Some(MAGIC) {
            return Err(bad("bad magic (big-endian or not BTF)"));
        }
        let hdr_len = u32_at(data, 4).ok_or(bad("short header"))? as usize;
        let field = |i: usize| u32_at(data, 8 + 4 * i).ok_or(bad("short header"));
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let section = |off: u32, len: u32| {
            let start = hdr_len + off as usize;
            data.get(start..start + len as usize)
                .ok_or(bad("section out of range"))
        };
        let types_raw = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        // Type ids start at 1; id 0 is void.
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut off = 0;
        while off < types_raw.len() {
            let name = u32_at(types_raw, off).ok_or(bad("truncated type"))?;
            let info = u32_at(types_raw, off + 4).ok_or(bad("truncated type"))?;
            let size_or_type = u32_at(types_raw, off + 8).ok_or(bad("truncated type"))?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let bitfield = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let at = off + 12 * m;
                        let offset = u32_at(types_raw, at + 8).ok_or(bad("truncated member"))?;
                        members.push(Member {
                            name: u32_at(types_raw, at).ok_or(bad("truncated member"))?,
                            ty: u32_at(types_raw, at + 4).ok_or(bad("truncated member"))?,
                            bits: if bitfield { offset & 0xff_ffff } else { offset },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => 0,
            };
            off += extra;
            types.push(Type {
                kind,
                name,
                ty: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.members.is_empty() {
                let name = btf.name(t.name).to_owned();
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].ty;
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in the struct or union `id`, looking inside
    /// anonymous struct and union members.
    fn member_in(&self, id: u32, member: &str) -> Option<u32> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for m in &t.members {
            if m.name == 0 {
                if let Some(inner) = self.member_in(m.ty, member) {
                    return Some(m.bits / 8 + inner);
                }
            } else if self.name(m.name) == member {
                return Some(m.bits / 8);
            }
        }
        None
    }

    /// Byte offset of a dotted member path, e.g. `("file", "f_path.dentry")`.
    pub fn offset(&self, strct: &str, path: &str) -> Result<u32, BtfError> {
        let mut id = *self
            .structs
            .get(strct)
            .ok_or_else(|| BtfError::NoStruct(strct.into()))?;
        let mut total = 0;
        for part in path.split('.') {
            let off = self
                .member_in(id, part)
                .ok_or_else(|| BtfError::NoMember(strct.into(), path.into()))?;
            total += off;
            // Descend into the member's type for the next part.
            let t = &self.types[self.resolve(id) as usize];
            id = self
                .find_member_type(t, part)
                .ok_or_else(|| BtfError::NoMember(strct.into(), path.into()))?;
        }
        Ok(total)
    }

    fn find_member_type(&self, t: &Type, member: &str) -> Option<u32> {
        for m in &t.members {
            if m.name == 0 {
                let inner = &self.types[self.resolve(m.ty) as usize];
                if let Some(found) = self.find_member_type(inner, member) {
                    return Some(found);
                }
            } else if self.name(m.name) == member {
                return Some(m.ty);
            }
        }
        None
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Btf;

    /// The running kernel's BTF parses and yields plausible offsets (every
    /// kernel this agent supports has BTF; the test host does).
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
        assert!(btf.offset("file", "no_such_member").is_err());
        assert!(btf.offset("no_such_struct", "x").is_err());
    }
}
