//! User namespace ID maps for rootless steps: the caller's uid/gid become 0,
//! and with `/etc/subuid`/`/etc/subgid` ranges (written through the setuid
//! `newuidmap`/`newgidmap` helpers) IDs 1..=count map onto the range, so
//! files owned by other IDs in an image keep their owners. Without ranges
//! only the single ID is mapped: files of other owners cannot be created.

use std::path::Path;
use std::process::Command;

use crate::error::ExecError;

/// A subordinate ID range for the current user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// Finds the first range for `name` or numeric `id` in a subuid/subgid file.
pub fn parse_subid(content: &str, name: &str, id: u32) -> Option<SubRange> {
    content.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
        if owner != name && owner.parse::<u32>().ok() != Some(id) {
            return None;
        }
        Some(SubRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        })
    })
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The ranges rootless steps will use, if any (both must exist).
pub fn sub_ranges() -> Option<(SubRange, SubRange)> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = user_name(uid).unwrap_or_default();
    let u = parse_subid(&std::fs::read_to_string("/etc/subuid").ok()?, &name, uid)?;
    let g = parse_subid(&std::fs::read_to_string("/etc/subgid").ok()?, &name, gid)?;
    find_tool("newuidmap")?;
    find_tool("newgidmap")?;
    Some((u, g))
}

/// How IDs inside a rootless step's user namespace appear on the host, so
/// that whoever reads an upperdir from outside (the layer writer) can record
/// the owners the image sees. Rootful, the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    uid: u32,
    gid: u32,
    ranges: Option<(SubRange, SubRange)>,
    identity: bool,
}

/// The kernel's overflow ID, which unmapped owners show as.
const OVERFLOW_ID: u32 = 65534;

impl IdMapping {
    /// The mapping steps started by this process use.
    pub fn current() -> Self {
        let identity = nix::unistd::geteuid().is_root();
        IdMapping {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            ranges: if identity { None } else { sub_ranges() },
            identity,
        }
    }

    fn back(host: u32, own: u32, range: Option<SubRange>) -> u32 {
        if host == own {
            return 0;
        }
        match range {
            Some(r) if host >= r.start && host - r.start < r.count => host - r.start + 1,
            _ => OVERFLOW_ID,
        }
    }

    /// The same mapping for the layer writer; `None` when it is the identity
    /// (rootful).
    pub fn owner_map(&self) -> Option<strata_oci::layer::OwnerMap> {
        if self.identity {
            return None;
        }
        let ranges = |own: u32, r: Option<SubRange>| {
            [(own, 0, 1), r.map_or((0, 0, 0), |r| (r.start, 1, r.count))]
        };
        Some(strata_oci::layer::OwnerMap {
            uids: ranges(self.uid, self.ranges.map(|r| r.0)),
            gids: ranges(self.gid, self.ranges.map(|r| r.1)),
        })
    }

    /// The uid the image sees for a file owned by `host` on disk.
    pub fn container_uid(&self, host: u32) -> u32 {
        if self.identity {
            host
        } else {
            Self::back(host, self.uid, self.ranges.map(|r| r.0))
        }
    }

    /// The gid the image sees for a file owned by `host` on disk.
    pub fn container_gid(&self, host: u32) -> u32 {
        if self.identity {
            host
        } else {
            Self::back(host, self.gid, self.ranges.map(|r| r.1))
        }
    }
}

fn run_tool(tool: &str, args: &[String]) -> Result<(), ExecError> {
    let exe = find_tool(tool).ok_or_else(|| ExecError::IdMap(format!("{tool} not found")))?;
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|source| ExecError::Tool {
            exe: exe.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ExecError::IdMap(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes the maps of the user namespace `pid` has just created.
pub(crate) fn map_ids(pid: u32) -> Result<(), ExecError> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if let Some((u, g)) = sub_ranges() {
        // Own ID as 0, the subordinate range from 1: `PID 0 OWN 1 1 START COUNT`.
        for (tool, own, range) in [("newuidmap", uid, u), ("newgidmap", gid, g)] {
            let args = [pid, 0, own, 1, 1, range.start, range.count].map(|n| n.to_string());
            run_tool(tool, &args)?;
        }
        return Ok(());
    }
    let proc = Path::new("/proc").join(pid.to_string());
    for (file, content) in [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("0 {uid} 1")),
        ("gid_map", format!("0 {gid} 1")),
    ] {
        let p = proc.join(file);
        std::fs::write(&p, content).map_err(|source| ExecError::Io {
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_by_name_or_number() {
        let f = "alice:100000:65536\n1002:200000:1000\n";
        assert_eq!(
            parse_subid(f, "alice", 1),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(f, "bob", 1002),
            Some(SubRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(parse_subid(f, "carol", 7), None);
    }

    #[test]
    fn mapping_back_to_container_ids() {
        let r = SubRange {
            start: 100000,
            count: 65536,
        };
        let m = IdMapping {
            uid: 1001,
            gid: 1002,
            ranges: Some((r, r)),
            identity: false,
        };
        assert_eq!(m.container_uid(1001), 0);
        assert_eq!(m.container_gid(1002), 0);
        assert_eq!(m.container_uid(101233), 1234);
        assert_eq!(m.container_uid(5), OVERFLOW_ID);
        let id = IdMapping {
            uid: 0,
            gid: 0,
            ranges: None,
            identity: true,
        };
        assert_eq!(id.container_uid(101233), 101233);
    }
}
