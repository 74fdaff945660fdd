//! Resolving `USER name|uid[:group|gid]` against the image's own
//! `/etc/passwd` and `/etc/group`, the way Docker (runc) does.

/// The identity a step runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary group first, then, when no group
    /// was given, the groups that list the user as a member.
    pub groups: Vec<u32>,
    /// The home directory from `/etc/passwd`, for a default `HOME`.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 6 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves `spec` given the contents of the image's passwd and group files
/// (empty when missing). Errors are messages for the user.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return resolve("0", passwd, group);
    }
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let numeric_uid = user_part.parse::<u32>().ok();
    let entry = passwd_entries(passwd).find(|e| match numeric_uid {
        Some(n) => e.uid == n,
        None => e.name == user_part,
    });
    let (uid, mut gid, name, home) = match (&entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), Some(e.home.to_string())),
        // A numeric uid need not exist in passwd (runc: gid 0 then).
        (None, Some(n)) => (n, 0, None, None),
        (None, None) => {
            return Err(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ));
        }
    };
    let mut groups = Vec::new();
    match group_part {
        Some(g) if !g.is_empty() => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(group)
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, id, _)| id)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            };
        }
        _ => {
            if let Some(name) = name {
                for (_, id, members) in group_entries(group) {
                    if members.contains(&name) && !groups.contains(&id) {
                        groups.push(id);
                    }
                }
            }
        }
    }
    // The primary group is always among the supplementary ones, as in
    // BuildKit (`ensureAdditionalGids`, executor/oci/user.go) and the
    // runtimes since the fix for CVE-2023-25173.
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:alice,bob\nwheel:x:10:alice\nalice:x:1000:\n";

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let id = resolve("alice", PASSWD, GROUP).expect("alice resolves");
        assert_eq!(
            (id.uid, id.gid, id.groups),
            (1000, 1000, vec![1000, 100, 10])
        );
        assert_eq!(id.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn explicit_group_by_name_or_number() {
        let id = resolve("alice:wheel", PASSWD, GROUP).expect("resolves");
        assert_eq!((id.uid, id.gid), (1000, 10));
        assert_eq!(id.groups, [10]);
        assert_eq!(
            resolve("1000:77", PASSWD, GROUP).map(|i| (i.gid, i.groups)),
            Ok((77, vec![77]))
        );
    }

    #[test]
    fn unknown_numeric_uid_gets_gid_zero_and_unknown_name_fails() {
        assert_eq!(
            resolve("4242", PASSWD, GROUP).map(|i| (i.uid, i.gid)),
            Ok((4242, 0))
        );
        assert!(resolve("mallory", PASSWD, GROUP).is_err());
        assert!(resolve("alice:nogroup", PASSWD, GROUP).is_err());
        assert_eq!(resolve("", "", "").map(|i| i.uid), Ok(0));
    }
}
