//! `--isolation chroot`, the step's side: the re-executed strata binary
//! (first argument [`CHROOT_ARG`]) reads its [`ChrootSpec`], chroots into
//! the prepared root, resolves the user there, drops privileges as the
//! namespaces executor does, and becomes the step with `execve`. A failure
//! before that is written to fd [`ERROR_FD`] (close-on-exec, so a successful
//! exec leaves it empty). See [`crate::chroot`] for the parent's side.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};

use crate::helper::exec::{mkdir_all_in_root, stdin_in_place, step_env_and_program};
use crate::protocol::{CHROOT_ARG, ChrootSpec, ERROR_FD};

/// Called first thing by the crate's `maybe_run_helper`: when this process was started as
/// a chroot step, runs it (never returning); otherwise returns.
pub(crate) fn maybe_run() {
    if std::env::args_os().nth(1).is_some_and(|a| a == CHROOT_ARG) {
        let e = match become_step() {
            Ok(never) => match never {},
            Err(e) => e,
        };
        // SAFETY: ERROR_FD was placed by the parent for this process and
        // nothing else here owns it.
        let mut w = unsafe { std::fs::File::from_raw_fd(ERROR_FD) };
        let _ = w.write_all(e.as_bytes());
        std::process::exit(127);
    }
}

fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

fn become_step() -> Result<std::convert::Infallible, String> {
    // The step must not inherit the error pipe; our own messages use it
    // until execve.
    nix::fcntl::fcntl(
        // SAFETY: a descriptor number the parent placed; only its flags change.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(ERROR_FD) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(err("error pipe"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(err("pdeathsig"))?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(err("reading the step"))?;
    let spec: ChrootSpec = serde_json::from_slice(&input).map_err(err("decoding the step"))?;
    let step = &spec.step;

    nix::unistd::chroot(&spec.root).map_err(err(format!(
        "chroot {} (needs CAP_SYS_CHROOT)",
        spec.root.display()
    )))?;
    std::env::set_current_dir("/").map_err(err("chdir /"))?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let id = crate::user::resolve(&step.user, &passwd, &group)?;

    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    mkdir_all_in_root(Path::new(&step.cwd), 0)
        .map_err(err(format!("create WORKDIR {}", step.cwd)))?;
    std::env::set_current_dir(&step.cwd).map_err(err(format!("chdir to {}", step.cwd)))?;

    let (env, program) = step_env_and_program(step, id.home.as_deref())?;
    stdin_in_place(spec.stdin_fd)?;

    // Before the capabilities go: raising a hard limit needs CAP_SYS_RESOURCE.
    crate::ulimit::apply(&step.ulimits)?;
    crate::helper::caps::drop_capabilities(false)?;
    nix::sys::prctl::set_no_new_privs().map_err(err("no_new_privs"))?;
    let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(err("setgroups"))?;
    nix::unistd::setgid(Gid::from_raw(id.gid)).map_err(err(format!("setgid {}", id.gid)))?;
    nix::unistd::setuid(Uid::from_raw(id.uid)).map_err(err(format!("setuid {}", id.uid)))?;
    if step.seccomp {
        crate::seccomp::install(&crate::seccomp::default_filters()?)?;
    }

    Err(crate::helper::exec::exec_step(&program, &step.argv, &env))
}
