//! Offsets of the kernel-structure fields the eBPF programs read, taken from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) at start-up.
//!
//! Rust eBPF has no CO-RE relocations, so a field offset baked in at build time would
//! read the wrong field on another kernel. Each field is looked up by name here —
//! through anonymous structs and unions — and its type is checked (an integer of the
//! size the program reads, or a pointer), so a kernel whose layout the programs cannot
//! read is refused at start-up instead of being read wrongly.
use std::path::Path;

use btf_rs::{Btf, Type};
use driftwall_abi::KernelOffsets;

/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the offsets could not be taken from BTF.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("cannot read kernel BTF from {path}: {reason} (is CONFIG_DEBUG_INFO_BTF enabled?)")]
    Unreadable { path: String, reason: String },
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    #[error("kernel BTF: struct `{ty}` has no field `{field}`")]
    NoField { ty: String, field: String },
    #[error("kernel BTF: `{ty}.{field}` is {found}, expected {expected}")]
    WrongType {
        ty: String,
        field: String,
        found: String,
        expected: String,
    },
    #[error("kernel BTF: {0}")]
    Malformed(String),
    #[error("kernel BTF has no enum `{ty}` with a value `{name}`")]
    NoEnumValue { ty: String, name: String },
}

/// What the program expects to find in a field.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An integer of this many bytes.
    Int(usize),
    /// A pointer.
    Ptr,
    /// An embedded struct with this name.
    Struct(&'static str),
    /// A struct of this many bytes wrapping one integer (`kuid_t`).
    Wrapped(usize),
}

/// Reads the offsets from the running kernel's BTF.
pub fn from_running_kernel() -> Result<KernelOffsets, OffsetsError> {
    from_btf_file(Path::new(VMLINUX_BTF))
}

/// Reads the offsets from a BTF file (a kernel's `/sys/kernel/btf/vmlinux`).
pub fn from_btf_file(path: &Path) -> Result<KernelOffsets, OffsetsError> {
    let btf = Btf::from_file(path).map_err(|e| OffsetsError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let f = |ty: &str, field: &str, expect: Expect| field_offset(&btf, ty, field, expect);
    // `struct sock` starts with a `struct sock_common __sk_common`.
    let sk_common = f("sock", "__sk_common", Expect::Struct("sock_common"))?;
    let common =
        |field: &str, expect: Expect| f("sock_common", field, expect).map(|off| sk_common + off);
    Ok(KernelOffsets {
        linux_binprm_file: f("linux_binprm", "file", Expect::Ptr)?,
        file_f_inode: f("file", "f_inode", Expect::Ptr)?,
        file_f_path: f("file", "f_path", Expect::Struct("path"))?,
        inode_i_ino: f("inode", "i_ino", Expect::Int(8))?,
        inode_i_sb: f("inode", "i_sb", Expect::Ptr)?,
        inode_i_nlink: f("inode", "__i_nlink", Expect::Int(4))?,
        linux_binprm_interp: f("linux_binprm", "interp", Expect::Ptr)?,
        super_block_s_dev: f("super_block", "s_dev", Expect::Int(4))?,
        task_struct_real_parent: f("task_struct", "real_parent", Expect::Ptr)?,
        task_struct_tgid: f("task_struct", "tgid", Expect::Int(4))?,
        task_struct_pid: f("task_struct", "pid", Expect::Int(4))?,
        task_struct_start_boottime: f("task_struct", "start_boottime", Expect::Int(8))?,
        task_struct_exit_code: f("task_struct", "exit_code", Expect::Int(4))?,
        linux_binprm_filename: f("linux_binprm", "filename", Expect::Ptr)?,
        task_struct_mm: f("task_struct", "mm", Expect::Ptr)?,
        mm_struct_arg_start: f("mm_struct", "arg_start", Expect::Int(8))?,
        mm_struct_arg_end: f("mm_struct", "arg_end", Expect::Int(8))?,
        mm_struct_exe_file: f("mm_struct", "exe_file", Expect::Ptr)?,
        task_struct_group_leader: f("task_struct", "group_leader", Expect::Ptr)?,
        task_struct_cred: f("task_struct", "cred", Expect::Ptr)?,
        cred_euid: f("cred", "euid", Expect::Wrapped(4))?,
        socket_sk: f("socket", "sk", Expect::Ptr)?,
        sock_sk_protocol: f("sock", "sk_protocol", Expect::Int(2))?,
        sock_skc_family: common("skc_family", Expect::Int(2))?,
        sock_skc_num: common("skc_num", Expect::Int(2))?,
        sock_skc_rcv_saddr: common("skc_rcv_saddr", Expect::Int(4))?,
        sock_skc_v6_rcv_saddr: common("skc_v6_rcv_saddr", Expect::Struct("in6_addr"))?,
        sock_skc_daddr: common("skc_daddr", Expect::Int(4))?,
        sock_skc_dport: common("skc_dport", Expect::Int(2))?,
        sock_skc_v6_daddr: common("skc_v6_daddr", Expect::Struct("in6_addr"))?,
        task_struct_files: f("task_struct", "files", Expect::Ptr)?,
        files_struct_fdt: f("files_struct", "fdt", Expect::Ptr)?,
        fdtable_max_fds: f("fdtable", "max_fds", Expect::Int(4))?,
        fdtable_fd: f("fdtable", "fd", Expect::Ptr)?,
        file_private_data: f("file", "private_data", Expect::Ptr)?,
        socket_file: f("socket", "file", Expect::Ptr)?,
        pt_regs_orig_ax: f("pt_regs", "orig_ax", Expect::Int(8))?,
        pt_regs_di: f("pt_regs", "di", Expect::Int(8))?,
        // `unsigned long cs` before Linux 6.9; since FRED, `u16 cs` in a union. The
        // program reads its low 16 bits (little-endian: the first two bytes).
        pt_regs_cs: f("pt_regs", "cs", Expect::Int(2))
            .or_else(|_| f("pt_regs", "cs", Expect::Int(8)))?,
        file_f_mode: f("file", "f_mode", Expect::Int(4))?,
        task_struct_real_cred: f("task_struct", "real_cred", Expect::Ptr)?,
        cred_uid: f("cred", "uid", Expect::Wrapped(4))?,
        cred_gid: f("cred", "gid", Expect::Wrapped(4))?,
        cred_suid: f("cred", "suid", Expect::Wrapped(4))?,
        cred_fsuid: f("cred", "fsuid", Expect::Wrapped(4))?,
        msghdr_msg_name: f("msghdr", "msg_name", Expect::Ptr)?,
        msghdr_msg_namelen: f("msghdr", "msg_namelen", Expect::Int(4))?,
        msghdr_msg_flags: f("msghdr", "msg_flags", Expect::Int(4))?,
        dentry_d_inode: f("dentry", "d_inode", Expect::Ptr)?,
        reading_module: enum_value(&btf, "kernel_read_file_id", "READING_MODULE")?,
        loading_module: enum_value(&btf, "kernel_load_data_id", "LOADING_MODULE")?,
        unix_sock_path: f("unix_sock", "path", Expect::Struct("path"))?,
        path_dentry: f("path", "dentry", Expect::Ptr)?,
        file_f_flags: f("file", "f_flags", Expect::Int(4))?,
    })
}

/// The value of the constant `name` of `enum ty`.
fn enum_value(btf: &Btf, ty: &str, name: &str) -> Result<u32, OffsetsError> {
    let missing = || OffsetsError::NoEnumValue {
        ty: ty.into(),
        name: name.into(),
    };
    let types = btf.resolve_types_by_name(ty).map_err(|_| missing())?;
    for t in &types {
        if let Type::Enum(e) = t {
            for m in &e.members {
                if btf.resolve_name(m).is_ok_and(|n| n == name) {
                    return Ok(m.val());
                }
            }
        }
    }
    Err(missing())
}

/// Byte offset of `ty.field`, searching anonymous members, with its type checked.
fn field_offset(btf: &Btf, ty: &str, field: &str, expect: Expect) -> Result<u32, OffsetsError> {
    let malformed = |e: btf_rs::Error| OffsetsError::Malformed(e.to_string());
    let types = btf
        .resolve_types_by_name(ty)
        .map_err(|_| OffsetsError::NoStruct(ty.into()))?;
    let st = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| OffsetsError::NoStruct(ty.into()))?;
    let (bits, member_type) = find_member(btf, st, field)
        .map_err(malformed)?
        .ok_or_else(|| OffsetsError::NoField {
            ty: ty.into(),
            field: field.into(),
        })?;
    if bits % 8 != 0 {
        return Err(OffsetsError::WrongType {
            ty: ty.into(),
            field: field.into(),
            found: "a bit field".into(),
            expected: format!("{expect:?}"),
        });
    }
    let resolved = strip_modifiers(btf, member_type).map_err(malformed)?;
    let ok = match (&resolved, expect) {
        (Type::Int(i), Expect::Int(n)) => i.size() == n,
        (Type::Ptr(_), Expect::Ptr) => true,
        (Type::Struct(s), Expect::Wrapped(n)) => s.size() == n,
        (Type::Struct(s), Expect::Struct(name)) => {
            btf.resolve_name(s).map(|n| n == name).unwrap_or(false)
        }
        _ => false,
    };
    if !ok {
        let found = match &resolved {
            Type::Int(i) => format!("a {}-byte integer", i.size()),
            other => other.name().to_string(),
        };
        return Err(OffsetsError::WrongType {
            ty: ty.into(),
            field: field.into(),
            found,
            expected: format!("{expect:?}"),
        });
    }
    Ok(bits / 8)
}

/// Finds a named member, descending into anonymous structs and unions. Returns its bit
/// offset from the start of `st` and its type.
fn find_member(
    btf: &Btf,
    st: &btf_rs::Struct,
    field: &str,
) -> Result<Option<(u32, Type)>, btf_rs::Error> {
    for m in &st.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == field {
            return Ok(Some((m.bit_offset(), btf.resolve_chained_type(m)?)));
        }
        if name.is_empty() {
            match strip_modifiers(btf, btf.resolve_chained_type(m)?)? {
                Type::Struct(inner) | Type::Union(inner) => {
                    if let Some((off, t)) = find_member(btf, &inner, field)? {
                        return Ok(Some((m.bit_offset() + off, t)));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(None)
}

/// Follows typedefs and const/volatile/restrict/type tags to the underlying type.
fn strip_modifiers(btf: &Btf, mut t: Type) -> Result<Type, btf_rs::Error> {
    // Bounded: a malformed BTF cycle must not hang start-up.
    for _ in 0..32 {
        t = match &t {
            Type::Typedef(x) => btf.resolve_chained_type(x)?,
            Type::Const(x) | Type::Volatile(x) | Type::Restrict(x) => {
                btf.resolve_chained_type(x)?
            }
            Type::TypeTag(x) => btf.resolve_chained_type(x)?,
            _ => return Ok(t),
        };
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's BTF is always there on these machines; the values differ per kernel,
    /// so only relationships that hold on every kernel are asserted here. The
    /// `exec_identity_host` test proves the offsets read the right values.
    #[test]
    fn offsets_of_the_running_kernel_are_found_and_plausible() {
        let off = from_running_kernel().expect("kernel BTF");
        assert_eq!(off.linux_binprm_file % 8, 0);
        assert_eq!(off.task_struct_real_parent % 8, 0);
        assert!(off.task_struct_tgid > 0);
        assert!(off.inode_i_sb > 0 && off.inode_i_ino > 0);
        assert_ne!(off.file_f_inode, off.file_f_path);
        assert!(off.task_struct_cred > 0 && off.cred_euid > 0);
        // skc_num follows skc_dport in the port pair; the v4 and v6 local addresses
        // are distinct fields.
        assert!(off.sock_skc_num > 0 && off.sock_skc_rcv_saddr > 0);
        assert_ne!(off.sock_skc_rcv_saddr, off.sock_skc_v6_rcv_saddr);
        assert!(off.sock_sk_protocol > off.sock_skc_v6_rcv_saddr);
        // The remote port and address sit beside the local ones in sock_common.
        assert_ne!(off.sock_skc_dport, off.sock_skc_num);
        assert_ne!(off.sock_skc_daddr, off.sock_skc_rcv_saddr);
        assert_ne!(off.sock_skc_v6_daddr, off.sock_skc_v6_rcv_saddr);
        assert!(off.task_struct_files > 0 && off.fdtable_fd > 0);
        // x86-64 pt_regs: orig_ax follows the argument registers.
        assert!(off.pt_regs_orig_ax > off.pt_regs_di);
        assert!(off.pt_regs_cs > off.pt_regs_orig_ax);
        // The credentials' ids are distinct fields; the enum values are the kernel's.
        let ids = [
            off.cred_uid,
            off.cred_gid,
            off.cred_suid,
            off.cred_euid,
            off.cred_fsuid,
        ];
        for (i, a) in ids.iter().enumerate() {
            assert!(ids[..i].iter().all(|b| b != a), "{ids:?}");
        }
        assert_ne!(off.task_struct_real_cred, off.task_struct_cred);
        assert_eq!((off.reading_module, off.loading_module), (2, 2));
        assert_ne!(off.msghdr_msg_name, off.msghdr_msg_namelen);
    }

    #[test]
    fn a_missing_field_or_wrong_type_is_refused() {
        let btf = Btf::from_file(VMLINUX_BTF).expect("kernel BTF");
        assert!(matches!(
            field_offset(&btf, "inode", "i_no_such_field", Expect::Ptr),
            Err(OffsetsError::NoField { .. })
        ));
        assert!(matches!(
            field_offset(&btf, "inode", "i_ino", Expect::Ptr),
            Err(OffsetsError::WrongType { .. })
        ));
        assert!(matches!(
            field_offset(&btf, "no_such_struct_dw", "x", Expect::Ptr),
            Err(OffsetsError::NoStruct(_))
        ));
    }
}
