//! `syscall_error` on file, process and socket calls through BPF LSM hooks.
//!
//! One program per hook; the agent attaches only the hooks an active fault
//! needs. A program returns `-errno` to fail the call, or passes on what an
//! earlier LSM program decided. Kernel structs are read with
//! `bpf_probe_read_kernel` at offsets the agent took from the running
//! kernel's BTF (`FL_KOFFS`).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{lsm, map},
    maps::Array,
    programs::LsmContext,
};
use faultline_common::{
    FaultSlot, KernelOffsets, MAX_FAULTS, MAX_LSM_SLOTS, MAX_PATH_DEPTH, kind, lsm_op,
};

use crate::slots::{CONFIG, Caller, SLOTS, coin, count, dry_run, live, scan_limit, target_matches};

/// Indices of the slots holding LSM faults (`AgentConfig::lsm_slot_count` valid).
#[map(name = "FL_LSM_SLOTS")]
static LSM_SLOTS: Array<u32> = Array::with_max_entries(MAX_LSM_SLOTS, 0);

#[map(name = "FL_KOFFS")]
static KOFFS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

const MAY_WRITE: i32 = 2;
const MAY_READ: i32 = 4;
const MAY_APPEND: i32 = 8;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;

/// What the hook knows about the call besides the caller.
#[derive(Clone, Copy)]
enum Object {
    None,
    /// A `struct dentry *` (may be negative, as for mkdir).
    Dentry(*const u8),
    /// A `struct file *`, or null (anonymous mmap).
    File(*const u8),
    /// A `struct file *` being read or written: directories (getdents
    /// reaches the same hook) are not matched.
    FileData(*const u8),
    /// A `struct socket *`.
    Socket(*const u8),
    /// The file a struct points to (read only for a call of a target).
    FileOf(*const u8, Field),
}

#[derive(Clone, Copy)]
enum Field {
    /// `vm_area_struct.vm_file`.
    VmaFile,
    /// `linux_binprm.file`.
    BprmFile,
}

#[inline(always)]
fn read_ptr(base: *const u8, off: u32) -> *const u8 {
    // SAFETY: bpf_probe_read_kernel copies from any kernel address and
    // returns Err on a fault instead of faulting; `off` is the field's offset
    // in the struct `base` points to (from the kernel's BTF), so the address
    // computed stays inside that object.
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<*const u8>()) }
        .unwrap_or(core::ptr::null())
}

#[inline(always)]
fn file_dentry(o: &KernelOffsets, file: *const u8) -> *const u8 {
    if file.is_null() {
        return core::ptr::null();
    }
    read_ptr(file, o.file_dentry)
}

/// Is `dentry`, or one of its ancestors up to `MAX_PATH_DEPTH` levels, the
/// inode the slot names?
#[inline(always)]
fn under(o: &KernelOffsets, dentry: *const u8, want: &FaultSlot) -> bool {
    let mut d = dentry;
    let mut level = 0;
    while level < MAX_PATH_DEPTH {
        if d.is_null() {
            return false;
        }
        let inode = read_ptr(d, o.dentry_inode);
        if !inode.is_null() {
            // SAFETY: as in read_ptr.
            let ino =
                unsafe { bpf_probe_read_kernel(inode.add(o.inode_ino as usize).cast::<u64>()) }
                    .unwrap_or(0);
            if ino == want.file.ino {
                let sb = read_ptr(inode, o.inode_sb);
                // SAFETY: as in read_ptr. `sb` may be null here: the read then
                // faults, yields 0, and the null test below rejects it.
                let dev = unsafe { bpf_probe_read_kernel(sb.add(o.sb_dev as usize).cast::<u32>()) }
                    .unwrap_or(0);
                if !sb.is_null() && dev == want.file.dev {
                    return want.file.has_generation == 0 || {
                        // SAFETY: as in read_ptr.
                        let generation = unsafe {
                            bpf_probe_read_kernel(
                                inode.add(o.inode_generation as usize).cast::<u32>(),
                            )
                        };
                        // A live inode owns its number on its device: with
                        // another generation the named file is gone (its
                        // number reused), and no ancestor can be it.
                        generation == Ok(want.file.generation)
                    };
                }
            }
        }
        let parent = read_ptr(d, o.dentry_parent);
        if parent == d {
            // The file system's root.
            return false;
        }
        d = parent;
        level += 1;
    }
    false
}

/// Is the file a directory?
#[inline(always)]
fn is_dir(o: &KernelOffsets, file: *const u8) -> bool {
    let d = file_dentry(o, file);
    if d.is_null() {
        return false;
    }
    let inode = read_ptr(d, o.dentry_inode);
    if inode.is_null() {
        return false;
    }
    // SAFETY: as in read_ptr.
    let mode = unsafe { bpf_probe_read_kernel(inode.add(o.inode_mode as usize).cast::<u16>()) }
        .unwrap_or(0);
    mode & S_IFMT == S_IFDIR
}

/// Local port of a socket (host byte order), 0 when unknown.
#[inline(always)]
fn socket_port(o: &KernelOffsets, sock: *const u8) -> u32 {
    if sock.is_null() {
        return 0;
    }
    let sk = read_ptr(sock, o.socket_sk);
    if sk.is_null() {
        return 0;
    }
    // SAFETY: as in read_ptr.
    u32::from(
        unsafe { bpf_probe_read_kernel(sk.add(o.sock_num as usize).cast::<u16>()) }.unwrap_or(0),
    )
}

/// The `j`th listed LSM slot, or None past the end of the list.
#[inline(always)]
fn listed(count: u32, j: u32) -> Option<(u32, Option<&'static FaultSlot>)> {
    if j >= count || j >= MAX_LSM_SLOTS {
        return None;
    }
    let i = *LSM_SLOTS.get(j)?;
    Some((i, if i < MAX_FAULTS { SLOTS.get(i) } else { None }))
}

/// The errno to fail the call with (negative), or 0 to let it pass.
#[inline(always)]
fn decide(op: u32, obj: Object) -> i32 {
    // The cheap tests first: this runs on every such call of every process
    // while a hook is attached.
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    let count_listed = cfg.lsm_slot_count;
    if count_listed == 0 {
        return 0;
    }
    let caller = Caller::current();
    if scan_limit(&caller).is_none() {
        return 0;
    }
    let mut j = 0;
    while j < MAX_LSM_SLOTS {
        let Some((i, slot)) = listed(count_listed, j) else {
            break;
        };
        j += 1;
        let Some(slot) = slot else { continue };
        if slot.kind != kind::LSM_ERROR
            || slot.op & op == 0
            || !target_matches(i, &slot.target, &caller)
            || !live(slot)
        {
            continue;
        }
        // Kernel structs are read only for a call of a target.
        let Some(o) = KOFFS.get(0) else { continue };
        if o.valid == 0 {
            continue;
        }
        let object_ok = match obj {
            Object::None => true,
            Object::Dentry(d) => slot.file.has_path == 0 || under(o, d, slot),
            Object::File(f) => {
                slot.file.has_path == 0 || (!f.is_null() && under(o, file_dentry(o, f), slot))
            }
            Object::FileData(f) => {
                !f.is_null()
                    && !is_dir(o, f)
                    && (slot.file.has_path == 0 || under(o, file_dentry(o, f), slot))
            }
            Object::Socket(s) => slot.port == 0 || socket_port(o, s) == slot.port,
            Object::FileOf(base, field) => {
                let off = match field {
                    Field::VmaFile => o.vma_file,
                    Field::BprmFile => o.bprm_file,
                };
                let f = if base.is_null() {
                    core::ptr::null()
                } else {
                    read_ptr(base, off)
                };
                slot.file.has_path == 0 || (!f.is_null() && under(o, file_dentry(o, f), slot))
            }
        };
        if object_ok {
            let hit = coin(slot);
            count(i, hit);
            if hit && !dry_run(slot) {
                return -(slot.errno as i32);
            }
        }
    }
    0
}

/// A return value the verifier accepts from an LSM program: 0 or a
/// negative errno (newer kernels check the range [-4095, 0] at exit).
#[expect(
    clippy::manual_clamp,
    reason = "explicit branches: the code shape the kernels' verifiers accepted is kept"
)]
#[inline(always)]
fn errno_ret(v: i32) -> i32 {
    if v > 0 {
        0
    } else if v < -4095 {
        -4095
    } else {
        v
    }
}

/// What an earlier LSM program on this hook decided.
#[inline(always)]
fn previous(ctx: &LsmContext, ret_arg: usize) -> i32 {
    errno_ret(ctx.arg(ret_arg))
}

/// Runs `decide` unless an earlier LSM program already failed the call.
#[inline(always)]
fn hook(ctx: &LsmContext, ret_arg: usize, op: u32, obj: Object) -> i32 {
    let prev = previous(ctx, ret_arg);
    if prev != 0 {
        return prev;
    }
    errno_ret(decide(op, obj))
}

#[lsm(hook = "file_open")]
pub fn fl_lsm_file_open(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    hook(&ctx, 1, lsm_op::OPEN, Object::File(file))
}

#[lsm(hook = "file_permission")]
pub fn fl_lsm_file_permission(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let mask: i32 = ctx.arg(1);
    let mut op = 0;
    if mask & MAY_READ != 0 {
        op |= lsm_op::READ;
    }
    if mask & (MAY_WRITE | MAY_APPEND) != 0 {
        op |= lsm_op::WRITE;
    }
    if op == 0 {
        return previous(&ctx, 2);
    }
    hook(&ctx, 2, op, Object::FileData(file))
}

#[lsm(hook = "mmap_file")]
pub fn fl_lsm_mmap_file(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    hook(&ctx, 4, lsm_op::MMAP, Object::File(file))
}

#[lsm(hook = "file_mprotect")]
pub fn fl_lsm_file_mprotect(ctx: LsmContext) -> i32 {
    let vma: *const u8 = ctx.arg(0);
    hook(
        &ctx,
        3,
        lsm_op::MPROTECT,
        Object::FileOf(vma, Field::VmaFile),
    )
}

#[lsm(hook = "file_ioctl")]
pub fn fl_lsm_file_ioctl(ctx: LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    hook(&ctx, 3, lsm_op::IOCTL, Object::File(file))
}

#[lsm(hook = "bprm_check_security")]
pub fn fl_lsm_bprm_check_security(ctx: LsmContext) -> i32 {
    let bprm: *const u8 = ctx.arg(0);
    hook(&ctx, 1, lsm_op::EXEC, Object::FileOf(bprm, Field::BprmFile))
}

#[lsm(hook = "task_alloc")]
pub fn fl_lsm_task_alloc(ctx: LsmContext) -> i32 {
    hook(&ctx, 2, lsm_op::FORK, Object::None)
}

#[lsm(hook = "task_kill")]
pub fn fl_lsm_task_kill(ctx: LsmContext) -> i32 {
    hook(&ctx, 4, lsm_op::KILL, Object::None)
}

#[lsm(hook = "socket_create")]
pub fn fl_lsm_socket_create(ctx: LsmContext) -> i32 {
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        // Sockets the kernel makes for itself are never faulted.
        return previous(&ctx, 4);
    }
    hook(&ctx, 4, lsm_op::SOCKET, Object::None)
}

#[lsm(hook = "socket_accept")]
pub fn fl_lsm_socket_accept(ctx: LsmContext) -> i32 {
    let sock: *const u8 = ctx.arg(0);
    hook(&ctx, 2, lsm_op::ACCEPT, Object::Socket(sock))
}

#[lsm(hook = "socket_listen")]
pub fn fl_lsm_socket_listen(ctx: LsmContext) -> i32 {
    let sock: *const u8 = ctx.arg(0);
    hook(&ctx, 2, lsm_op::LISTEN, Object::Socket(sock))
}

#[lsm(hook = "socket_recvmsg")]
pub fn fl_lsm_socket_recvmsg(ctx: LsmContext) -> i32 {
    let sock: *const u8 = ctx.arg(0);
    hook(&ctx, 4, lsm_op::RECVMSG, Object::Socket(sock))
}

#[lsm(hook = "inode_unlink")]
pub fn fl_lsm_inode_unlink(ctx: LsmContext) -> i32 {
    let dentry: *const u8 = ctx.arg(1);
    hook(&ctx, 2, lsm_op::UNLINK, Object::Dentry(dentry))
}

#[lsm(hook = "inode_rmdir")]
pub fn fl_lsm_inode_rmdir(ctx: LsmContext) -> i32 {
    let dentry: *const u8 = ctx.arg(1);
    hook(&ctx, 2, lsm_op::RMDIR, Object::Dentry(dentry))
}

#[lsm(hook = "inode_mkdir")]
pub fn fl_lsm_inode_mkdir(ctx: LsmContext) -> i32 {
    let dentry: *const u8 = ctx.arg(1);
    hook(&ctx, 3, lsm_op::MKDIR, Object::Dentry(dentry))
}

#[lsm(hook = "inode_rename")]
pub fn fl_lsm_inode_rename(ctx: LsmContext) -> i32 {
    let old_dentry: *const u8 = ctx.arg(1);
    hook(&ctx, 4, lsm_op::RENAME, Object::Dentry(old_dentry))
}

#[lsm(hook = "inode_link")]
pub fn fl_lsm_inode_link(ctx: LsmContext) -> i32 {
    let new_dentry: *const u8 = ctx.arg(2);
    hook(&ctx, 3, lsm_op::LINK, Object::Dentry(new_dentry))
}

#[lsm(hook = "inode_symlink")]
pub fn fl_lsm_inode_symlink(ctx: LsmContext) -> i32 {
    let dentry: *const u8 = ctx.arg(1);
    hook(&ctx, 3, lsm_op::SYMLINK, Object::Dentry(dentry))
}
