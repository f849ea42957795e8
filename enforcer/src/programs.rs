//! The eBPF object embedded in the agent, and the loading and attaching of its programs.
//!
//! The object is built from `enforcer-ebpf` by `build.rs` and embedded, so an agent
//! binary always carries the programs it was tested with. Kernel-structure offsets are
//! taken from the running kernel's BTF and written into the object's read-only globals
//! before load (see [`kernel_offsets`](crate::kernel_offsets)).
use aya::{
    Btf, Ebpf, EbpfLoader, Pod,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{BtfTracePoint, Lsm},
};
use driftwall_abi::{
    FileAllowKey, FileId, KernelOffsets, NODE_PROTECTS_FILES, NodeState, SetuidKey, names,
    rules::{IpAtomKey, NetAllowKey, PATH_KEY_BYTES, PortSet, RuleSet},
};
use driftwall_compiler::cedar::tables::RuleTables;

use driftwall_compiler::reference::KernelTables;

/// The compiled eBPF object.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/driftwall-enforcer-ebpf"));

/// Where the LSM list of the running kernel is published.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Why programs or maps could not be set up. Each names the kernel facility.
#[derive(Debug, thiserror::Error)]
pub enum ProgramsError {
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("reading the kernel's BTF for program attach failed: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error(
        "BPF LSM is not active on this kernel (active LSMs: {active}); boot with `lsm=...,bpf` to enforce execs"
    )]
    LsmInactive { active: String },
    #[error("cannot read {LSM_LIST}: {0} (is securityfs mounted at /sys/kernel/security?)")]
    LsmList(std::io::Error),
}

/// Opens the embedded object with the running kernel's offsets, with ring buffers of
/// `ring_bytes` each (a power of two, page multiple: see `loss::parse_ring_bytes`).
pub fn open(offsets: &KernelOffsets, ring_bytes: u32) -> Result<Ebpf, ProgramsError> {
    let ebpf = EbpfLoader::new()
        .override_global(names::KERNEL_OFFSETS, offsets, true)
        .map_max_entries(names::EVENTS, ring_bytes)
        .map_max_entries(names::LIFECYCLE, ring_bytes)
        .load(OBJECT)?;
    Ok(ebpf)
}

/// Whether the running kernel has BPF LSM in its active LSM list.
pub fn check_bpf_lsm() -> Result<(), ProgramsError> {
    let list = std::fs::read_to_string(LSM_LIST).map_err(ProgramsError::LsmList)?;
    if list.trim().split(',').any(|l| l == "bpf") {
        Ok(())
    } else {
        Err(ProgramsError::LsmInactive {
            active: list.trim().to_string(),
        })
    }
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> ProgramsError {
    move |source| ProgramsError::Map { name, source }
}

/// Inserts `entries` into the hash map `name`.
fn fill_hash<'a, K: Pod + 'a, V: Pod + 'a>(
    ebpf: &mut Ebpf,
    name: &'static str,
    entries: impl IntoIterator<Item = (&'a K, &'a V)>,
) -> Result<(), ProgramsError> {
    let mut map: HashMap<&mut MapData, K, V> =
        HashMap::try_from(ebpf.map_mut(name).ok_or(ProgramsError::Missing(name))?)
            .map_err(map_err(name))?;
    for (key, value) in entries {
        map.insert(*key, *value, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Writes the Cedar rule tables: the look-up tries first, then the rule set that
/// refers to their bits.
fn write_rules(ebpf: &mut Ebpf, rules: &RuleTables) -> Result<(), ProgramsError> {
    for (name, entries) in [
        (names::PATH_ATOMS, &rules.path_prefix),
        (names::PATH_SUFFIX_ATOMS, &rules.path_suffix),
    ] {
        let mut trie: LpmTrie<&mut MapData, [u8; PATH_KEY_BYTES], u64> = LpmTrie::try_from(
            ebpf.map_mut(name)
                .ok_or(ProgramsError::Missing("a path-atom map"))?,
        )
        .map_err(map_err(name))?;
        for (prefix, data, bits) in RuleTables::path_trie(entries) {
            trie.insert(&Key::new(prefix, data), bits, 0)
                .map_err(map_err(name))?;
        }
    }
    {
        let name = names::IP_ATOMS;
        let mut trie: LpmTrie<&mut MapData, IpAtomKey, u64> = LpmTrie::try_from(
            ebpf.map_mut(name)
                .ok_or(ProgramsError::Missing("IP_ATOMS map"))?,
        )
        .map_err(map_err(name))?;
        for (prefix, data, bits) in rules.ip_trie() {
            trie.insert(&Key::new(prefix, data), bits, 0)
                .map_err(map_err(name))?;
        }
    }
    let name = names::RULES;
    let mut set: Array<&mut MapData, RuleSet> = Array::try_from(
        ebpf.map_mut(name)
            .ok_or(ProgramsError::Missing("RULES map"))?,
    )
    .map_err(map_err(name))?;
    set.set(0, rules.rule_set(), 0).map_err(map_err(name))?;
    Ok(())
}

/// Reads, changes and writes back the one `NODE_STATE` value.
fn update_node_state(
    ebpf: &mut Ebpf,
    change: impl FnOnce(&mut NodeState),
) -> Result<(), ProgramsError> {
    let name = names::NODE_STATE;
    let mut map: Array<&mut MapData, NodeState> = Array::try_from(
        ebpf.map_mut(name)
            .ok_or(ProgramsError::Missing("NODE_STATE map"))?,
    )
    .map_err(map_err(name))?;
    let mut state = map.get(&0, 0).map_err(map_err(name))?;
    change(&mut state);
    map.set(0, state, 0).map_err(map_err(name))
}

/// Writes the profiles' file rules (`FILE_ALLOW`), the users workloads may become
/// (`SETUID_ALLOW`) and which classes some workload polices (`NODE_STATE`, which lets
/// a hook no workload needs leave early).
fn write_file_and_privilege_tables(
    ebpf: &mut Ebpf,
    tables: &KernelTables,
) -> Result<(), ProgramsError> {
    {
        let name = names::FILE_ALLOW;
        let mut trie: LpmTrie<&mut MapData, FileAllowKey, u8> = LpmTrie::try_from(
            ebpf.map_mut(name)
                .ok_or(ProgramsError::Missing("FILE_ALLOW map"))?,
        )
        .map_err(map_err(name))?;
        for (key, bits) in &tables.file_allow {
            // Keys that do not fit were refused when the bundle was compiled and read.
            if let Some((prefix, data)) = driftwall_compiler::files::trie_key(key) {
                trie.insert(&Key::new(prefix, data), *bits, 0)
                    .map_err(map_err(name))?;
            }
        }
    }
    fill_hash::<SetuidKey, u8>(
        ebpf,
        names::SETUID_ALLOW,
        tables.setuid_allow.iter().map(|k| (k, &1u8)),
    )?;
    let police_any = tables.bindings.values().fold(0, |p, b| p | b.police);
    update_node_state(ebpf, |s| s.police_any = police_any)
}

/// Protects the agent from the workloads it polices: its thread group (`tgid`) may not
/// be signalled or traced by them, and the files `files` (its config, bundle, state,
/// binary, by identity) may not be opened for writing, renamed or unlinked by them.
/// Call before [`attach_enforcement`].
pub fn protect_agent(ebpf: &mut Ebpf, tgid: u32, files: &[FileId]) -> Result<(), ProgramsError> {
    fill_hash::<FileId, u8>(
        ebpf,
        names::PROTECTED_FILES,
        files.iter().map(|f| (f, &1u8)),
    )?;
    update_node_state(ebpf, |s| {
        s.agent_tgid = tgid;
        s.flags = if files.is_empty() {
            s.flags & !NODE_PROTECTS_FILES
        } else {
            s.flags | NODE_PROTECTS_FILES
        };
    })
}

/// Writes the tables into the maps: Cedar rules and allowlists first, then bindings,
/// so that a workload is never bound before what it may do is in place.
pub fn write_tables(ebpf: &mut Ebpf, tables: &KernelTables) -> Result<(), ProgramsError> {
    write_rules(ebpf, &tables.rules)?;
    write_file_and_privilege_tables(ebpf, tables)?;
    {
        let name = names::NET_ALLOW;
        let mut trie: LpmTrie<&mut MapData, NetAllowKey, PortSet> = LpmTrie::try_from(
            ebpf.map_mut(name)
                .ok_or(ProgramsError::Missing("NET_ALLOW map"))?,
        )
        .map_err(map_err(name))?;
        for (key, set) in &tables.net_allow {
            let (prefix, data) = driftwall_compiler::network::trie_key(key);
            trie.insert(&Key::new(prefix, data), *set, 0)
                .map_err(map_err(name))?;
        }
    }
    fill_hash(ebpf, names::EXEC_ALLOW, &tables.exec_allow)?;
    fill_hash(
        ebpf,
        names::EXEC_CONSTRAINTS,
        tables.exec_constraints.iter().map(|k| (k, &1u8)),
    )?;
    fill_hash(ebpf, names::WORKLOAD_BINDINGS, &tables.bindings)?;
    Ok(())
}

/// The LSM programs and the hooks they attach to.
pub const LSM_PROGRAMS: [(&str, &str); 16] = [
    (names::PROG_EXEC, "bprm_check_security"),
    (names::PROG_CONNECT, "socket_connect"),
    (names::PROG_BIND, "socket_bind"),
    (names::PROG_LISTEN, "socket_listen"),
    (names::PROG_SENDMSG, "socket_sendmsg"),
    (names::PROG_FILE_OPEN, "file_open"),
    (names::PROG_PTRACE, "ptrace_access_check"),
    (names::PROG_KERNEL_READ_FILE, "kernel_read_file"),
    (names::PROG_KERNEL_LOAD_DATA, "kernel_load_data"),
    (names::PROG_SB_MOUNT, "sb_mount"),
    (names::PROG_SETUID, "task_fix_setuid"),
    (names::PROG_TASK_KILL, "task_kill"),
    (names::PROG_BPF, "bpf"),
    (names::PROG_INODE_UNLINK, "inode_unlink"),
    (names::PROG_INODE_RENAME, "inode_rename"),
    (names::PROG_UNIX_CONNECT, "unix_stream_connect"),
];

/// Loads and attaches the LSM programs (exec, network, file, privileged operations,
/// self-protection). All are loaded (verified) before any is attached, so a kernel that
/// refuses one leaves nothing half in force. From the last attach on, every hooked
/// operation is decided.
pub fn attach_enforcement(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProgramsError> {
    attach_lsm(ebpf, btf, &LSM_PROGRAMS)
}

/// LSM programs that decide nothing, on the hooks the enforcer decides: the floor any
/// BPF-LSM enforcer pays, for the overhead benchmark. The agent never attaches them.
pub const FLOOR_PROGRAMS: [(&str, &str); 3] = [
    ("floor_bprm_check_security", "bprm_check_security"),
    ("floor_socket_connect", "socket_connect"),
    ("floor_file_open", "file_open"),
];

/// Loads every program of `programs`, then attaches them: nothing is attached until all
/// have passed the verifier.
pub fn attach_lsm(
    ebpf: &mut Ebpf,
    btf: &Btf,
    programs: &[(&'static str, &'static str)],
) -> Result<(), ProgramsError> {
    for &(name, hook) in programs {
        let prog: &mut Lsm = ebpf
            .program_mut(name)
            .ok_or(ProgramsError::Missing("an LSM program"))?
            .try_into()
            .map_err(|source| ProgramsError::Program { name, source })?;
        let started = std::time::Instant::now();
        prog.load(hook, btf)
            .map_err(|source| ProgramsError::Program { name, source })?;
        tracing::debug!(
            program = name,
            verified_instructions = prog
                .info()
                .ok()
                .and_then(|i| i.verified_instruction_count()),
            load_ms = started.elapsed().as_millis() as u64,
            "LSM program verified"
        );
    }
    for &(name, _) in programs {
        let prog: &mut Lsm = ebpf
            .program_mut(name)
            .ok_or(ProgramsError::Missing("an LSM program"))?
            .try_into()
            .map_err(|source| ProgramsError::Program { name, source })?;
        prog.attach()
            .map_err(|source| ProgramsError::Program { name, source })?;
    }
    Ok(())
}

/// The `tp_btf` lifecycle programs and their tracepoints.
pub const LIFECYCLE_PROGRAMS: [(&str, &str); 3] = [
    (names::PROG_FORK, "sched_process_fork"),
    (names::PROG_EXEC_SEEN, "sched_process_exec"),
    (names::PROG_EXIT, "sched_process_exit"),
];

/// Loads and attaches the `tp_btf` lifecycle programs (fork, exec, exit). They need no
/// BPF LSM.
pub fn attach_lifecycle(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProgramsError> {
    for (name, tracepoint) in LIFECYCLE_PROGRAMS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or(ProgramsError::Missing("a lifecycle program"))?
            .try_into()
            .map_err(|source| ProgramsError::Program { name, source })?;
        prog.load(tracepoint, btf)
            .map_err(|source| ProgramsError::Program { name, source })?;
        prog.attach()
            .map_err(|source| ProgramsError::Program { name, source })?;
    }
    Ok(())
}

/// Loads and attaches the `tp_btf` program on `sys_exit` that reports TCP connect,
/// listen and accept and credential changes on the `LIFECYCLE` ring (see
/// `enforcer-ebpf/src/connections.rs`). It needs no BPF LSM and no tracefs.
pub fn attach_connections(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProgramsError> {
    let name = names::PROG_SYSCALL_EXIT;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProgramsError::Missing("the sys_exit capture program"))?
        .try_into()
        .map_err(|source| ProgramsError::Program { name, source })?;
    prog.load("sys_exit", btf)
        .map_err(|source| ProgramsError::Program { name, source })?;
    prog.attach()
        .map_err(|source| ProgramsError::Program { name, source })?;
    Ok(())
}
