//! The step's pid 1: finishes the root (proc, dev, sys, provided files, RUN
//! mounts), pivots into it, resolves the user, drops privileges and execs
//! the command.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};

use super::caps::drop_capabilities;
use super::context::err;
use super::dev::setup_dev;
use super::mounts::{bind, bind_tree_read_only, mask_kernel_files, setup_mounts};
use super::net::{loopback_up, private_network};
use crate::protocol::{HelperSpec, STDIN_FD, provided_files, rel_target};
use crate::spec::Network;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// The step's pid 1: finishes the root, pivots into it and execs the command.
pub(super) fn child(spec: &HelperSpec, merged: &Path) -> Result<std::convert::Infallible, String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(err("pdeathsig"))?;
    // pivot_root moves the root of every process in the mount namespace: the
    // step gets a namespace of its own (a copy of the helper's, overlay
    // included) so the helper keeps the host's view to write its result.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(err("unshare the step's mount namespace"))?;
    // Its own session: terminal signals (Ctrl-C) go to strata, which decides.
    let _ = nix::unistd::setsid();
    nix::unistd::sethostname(&spec.step.hostname).map_err(err("sethostname"))?;
    match (spec.step.network, &spec.pasta) {
        (Network::None, _) => loopback_up()?,
        (Network::Sandbox, Some(pasta)) => private_network(pasta, &spec.state, spec.dns_forward)?,
        // No pasta: the host's network (the parent has warned).
        (Network::Sandbox, None) | (Network::Host, _) => {}
    }
    mount(
        Some("proc"),
        &merged.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(err("mount /proc"))?;
    let own_shm = spec
        .step
        .mounts
        .iter()
        .any(|m| rel_target(m.target()).is_ok_and(|t| t == Path::new("dev/shm")));
    setup_dev(
        merged,
        (!own_shm).then_some(spec.step.shm_size),
        spec.device_filter,
    )?;
    let sys = merged.join("sys");
    let ro = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
    if mount(Some("sysfs"), &sys, Some("sysfs"), ro, None::<&str>).is_err() {
        // A fresh sysfs needs a network namespace we own; rootless with the
        // host's network gets the host's, every mount in it (the cgroup v1
        // hierarchies too) read-only.
        bind_tree_read_only(Path::new("/sys"), &sys)?;
    }
    for f in provided_files(&spec.step) {
        let name = f.trim_start_matches("etc/");
        bind(&spec.state.join(name), &merged.join(f), false)?;
    }
    setup_mounts(spec, merged)?;
    mask_kernel_files(merged)?;

    std::env::set_current_dir(merged).map_err(err("chdir to root"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach the old root"))?;
    std::env::set_current_dir("/").map_err(err("chdir /"))?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let id = crate::user::resolve(&spec.step.user, &passwd, &group)?;

    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    mkdir_all_in_root(Path::new(&spec.step.cwd), 0)
        .map_err(err(format!("create WORKDIR {}", spec.step.cwd)))?;
    std::env::set_current_dir(&spec.step.cwd)
        .map_err(err(format!("chdir to {}", spec.step.cwd)))?;

    let (env, program) = step_env_and_program(&spec.step, id.home.as_deref())?;
    stdin_in_place(spec.stdin_fd)?;

    // Before the capabilities go: raising a hard limit needs CAP_SYS_RESOURCE.
    crate::ulimit::apply(&spec.step.ulimits)?;
    drop_capabilities(spec.device_filter)?;
    nix::sys::prctl::set_no_new_privs().map_err(err("no_new_privs"))?;
    let setgroups_allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    if setgroups_allowed {
        let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(err("setgroups"))?;
    }
    nix::unistd::setgid(Gid::from_raw(id.gid)).map_err(err(format!("setgid {}", id.gid)))?;
    nix::unistd::setuid(Uid::from_raw(id.uid)).map_err(err(format!("setuid {}", id.uid)))?;
    // Last, so that our own setup above is not filtered.
    if spec.step.seccomp {
        crate::seccomp::install(&crate::seccomp::default_filters()?)?;
    }

    Err(exec_step(&program, &spec.step.argv, &env))
}

/// Replaces this process with the step's program; returns only why it
/// could not.
pub(crate) fn exec_step(program: &Path, argv: &[String], env: &[String]) -> String {
    let run = || -> Result<std::convert::Infallible, String> {
        let args: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
        let envs: Vec<CString> = env.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
        let prog = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| "program path contains NUL".to_string())?;
        nix::unistd::execve(&prog, &args, &envs)
            .map_err(|e| format!("exec {}: {e}", program.display()))
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// `mkdir -p` after pivot_root, following symlinks the way the step would
/// (they can only resolve inside the new root), including dangling ones,
/// whose targets are created.
pub(crate) fn mkdir_all_in_root(path: &Path, depth: u32) -> std::io::Result<()> {
    if depth > 40 {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut cur = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => cur.push(n),
            std::path::Component::ParentDir => {
                cur.pop();
                continue;
            }
            _ => continue,
        }
        match std::fs::metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(_) => match std::fs::symlink_metadata(&cur) {
                Ok(l) if l.file_type().is_symlink() => {
                    let target = std::fs::read_link(&cur)?;
                    let abs = cur.parent().unwrap_or(Path::new("/")).join(target);
                    mkdir_all_in_root(&abs, depth + 1)?;
                }
                _ => std::fs::DirBuilder::new().mode(0o755).create(&cur)?,
            },
        }
    }
    Ok(())
}

/// The step's environment as runc gives it (PATH, HOSTNAME when asked for,
/// and HOME from the user's passwd entry filled in when the image sets
/// none) and the program its `argv[0]` names on that PATH. Both executors
/// (namespaces and chroot) start the step with these.
pub(crate) fn step_env_and_program(
    step: &crate::spec::RunSpec,
    home: Option<&str>,
) -> Result<(Vec<String>, PathBuf), String> {
    let mut env: Vec<String> = step.env.clone();
    let has = |env: &[String], k: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if step.provide_hostname && !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", step.hostname));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", home.unwrap_or("/")));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let argv0 = step.argv.first().ok_or("empty command")?;
    let program = resolve_program(argv0, &path_var)?;
    Ok((env, program))
}

/// The step's stdin on fd 0: what the parent placed on [`STDIN_FD`], else
/// /dev/null.
pub(crate) fn stdin_in_place(from_parent: bool) -> Result<(), String> {
    if from_parent {
        // SAFETY: dup2 and close on plain integers; fd STDIN_FD was placed
        // by the parent for this process and nothing else here owns it.
        if unsafe { libc::dup2(STDIN_FD, 0) } < 0 {
            return Err(format!("stdin: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: as above; the step must not inherit a second copy.
        unsafe { libc::close(STDIN_FD) };
    } else {
        let devnull = std::fs::File::open("/dev/null").map_err(err("/dev/null"))?;
        nix::unistd::dup2_stdin(&devnull).map_err(err("stdin"))?;
    }
    Ok(())
}

pub(crate) fn resolve_program(argv0: &str, path: &str) -> Result<PathBuf, String> {
    if argv0.contains('/') {
        return Ok(PathBuf::from(argv0));
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(argv0);
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {argv0:?}: executable file not found in $PATH"
    ))
}
