//! Guest-side helpers shared by the guest programs (`dw-guest-exec`, `dw-guest-demo`):
//! starting a process inside a given cgroup and learning whether its `execve` was
//! refused, and with which errno.
use std::ffi::CString;

/// The cgroup v2 mount inside the guest (`standard_init` mounts it there).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What became of an exec attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// The child's pid (its tgid: it is single-threaded).
    pub pid: i32,
    /// `Err(errno)` when `execve` failed; `Ok(status)` with the exit status otherwise.
    pub outcome: Result<i32, i32>,
}

/// Forks a child that moves itself into `cgroup` (relative to [`CGROUP_ROOT`]; `""` is
/// the root cgroup) and execs `argv[0]` with `argv` and an empty environment. The
/// child's standard output goes to `/dev/null` unless `show_output`. Waits for it.
///
/// The exec's errno travels back over a close-on-exec pipe: EOF means the exec
/// succeeded, four bytes are the errno of a failed one.
pub fn spawn_in_cgroup(cgroup: &str, argv: &[&str], show_output: bool) -> Result<Spawned, String> {
    let procs =
        CString::new(format!("{CGROUP_ROOT}/{cgroup}/cgroup.procs")).map_err(|e| e.to_string())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let prog = args.first().ok_or("an empty argv")?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp = [std::ptr::null()];
    let mut fds = [0i32; 2];
    // The child reports "could not join the cgroup" as errno + JOIN_FAILED.
    const JOIN_FAILED: i32 = 1 << 20;
    // SAFETY: plain syscalls; between fork and exec the child only calls
    // async-signal-safe functions on memory prepared before the fork.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            libc::close(fds[0]);
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                let err: i32 = JOIN_FAILED + *libc::__errno_location();
                libc::write(fds[1], (&raw const err).cast(), 4);
                libc::_exit(126);
            }
            libc::close(fd);
            if !show_output {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if null >= 0 {
                    libc::dup2(null, 1);
                }
            }
            libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let err: i32 = *libc::__errno_location();
            libc::write(fds[1], (&raw const err).cast(), 4);
            libc::_exit(127);
        }
        libc::close(fds[1]);
        let mut err: i32 = 0;
        let n = libc::read(fds[0], (&raw mut err).cast(), 4);
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if n == 4 {
            if err >= JOIN_FAILED {
                return Err(format!(
                    "the child could not join cgroup /{cgroup}: {}",
                    std::io::Error::from_raw_os_error(err - JOIN_FAILED)
                ));
            }
            return Ok(Spawned {
                pid,
                outcome: Err(err),
            });
        }
        Ok(Spawned {
            pid,
            outcome: Ok(libc::WEXITSTATUS(status)),
        })
    }
}
