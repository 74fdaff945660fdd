//! The network of a `--network=none` step: a fresh namespace with loopback.

use std::os::fd::AsRawFd;

use super::context::err;

/// Brings the loopback interface up in a fresh network namespace.
pub(super) fn loopback_up() -> Result<(), String> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err("socket"))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // The request's type is libc's `Ioctl`: c_ulong with glibc, c_int with
    // musl (the static dist binary).
    // SAFETY: SIOCGIFFLAGS reads the named interface's flags into `req`, a
    // valid ifreq that outlives the call; the fd is a live socket.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as libc::Ioctl,
            &mut req,
        )
    } < 0
    {
        return Err(format!("get lo flags: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifr_ifru is a union; SIOCGIFFLAGS just filled its flags member.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &req) } < 0 {
        return Err(format!("bring lo up: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
