//! The default network, parent side: which connector gives a step a private
//! network namespace with outbound connectivity, and the resolver the step
//! is told about. The in-namespace side is `helper/net.rs`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The address a step's resolv.conf names when the host's resolver is on
/// the host's loopback (unreachable from the step's own namespace); pasta
/// forwards DNS sent there to that resolver. Link-local, so it is never a
/// real server's address.
pub(crate) const DNS_FORWARD_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));

/// `pasta` (Debian package `passt`), found on `PATH` or in the usual system
/// directories: what connects the default network's namespace to the
/// outside world. `None` when it is not installed, or when this user cannot
/// open `/dev/net/tun` (pasta's tap device; normally mode 0666, but some
/// hosts keep it root-only); steps on the default network then share the
/// host's network, and the caller should say so.
pub fn sandbox_network_helper() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let pasta = std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("pasta"))
        .find(|candidate| is_executable(candidate))?;
    let rw = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK;
    nix::unistd::access(TUN_DEVICE, rw).is_ok().then_some(pasta)
}

/// The device pasta opens (in the step's namespace) for its tap interface.
pub const TUN_DEVICE: &str = "/dev/net/tun";

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The step's resolv.conf on a private network: `nameserver` lines naming a
/// loopback address become [`DNS_FORWARD_ADDR`] (returned, for pasta to
/// forward), the rest is kept.
pub(crate) fn private_resolv_conf(host: &str) -> (String, Option<IpAddr>) {
    let mut forwarded = false;
    let mut out = String::with_capacity(host.len());
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let loopback = words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|a| a.is_loopback());
        if loopback {
            if !forwarded {
                out.push_str(&format!("nameserver {DNS_FORWARD_ADDR}\n"));
                forwarded = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, forwarded.then_some(DNS_FORWARD_ADDR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_forwarded_once() {
        let (conf, fwd) = private_resolv_conf(
            "search example\nnameserver 127.0.0.11\nnameserver ::1\noptions ndots:0\n",
        );
        assert_eq!(
            conf,
            "search example\nnameserver 169.254.1.1\noptions ndots:0\n"
        );
        assert_eq!(fwd, Some(DNS_FORWARD_ADDR));
        let (conf, fwd) = private_resolv_conf("nameserver 10.255.255.53\n");
        assert_eq!(conf, "nameserver 10.255.255.53\n");
        assert_eq!(fwd, None);
    }
}
