//! `RUN --mount=type=cache|bind|tmpfs|secret|ssh,...`: parsing the spec,
//! resolving its source, and its contribution to the step's cache key.

use std::path::{Path, PathBuf};

use strata_exec::{CacheSharing, Mount};
use strata_frontend::Instruction;

use crate::error::Result;
use crate::solver::Solver;

/// A resolved mount plus what it adds to the cache key.
pub(crate) struct Resolved {
    pub mounts: Vec<Mount>,
    pub key: Vec<u8>,
    /// Bind mounts from another stage or an image: their keys come from
    /// the content index; their sources exist on disk only after
    /// [`Solver::materialise_mounts`], which the step calls when it runs.
    from_stage: Vec<StageBind>,
}

/// A `--mount=type=bind,from=...` whose source is not on disk yet.
struct StageBind {
    /// Its place in `Resolved::mounts`.
    mount: usize,
    from: String,
    /// The source, resolved in the stage's tree.
    path: String,
}

/// A tmpfs `size=` as BuildKit reads it (`units.RAMInBytes` of
/// docker/go-units): a number, a decimal fraction allowed, then an optional
/// binary unit `k`, `m`, `g`, `t` or `p` (any case, `i` and `b` after it
/// optional): `128m` is 128 MiB.
fn ram_in_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits_end = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(digits_end);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let bytes = number * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn octal(v: &str) -> Option<u32> {
    u32::from_str_radix(v.trim_start_matches("0o"), 8).ok()
}

impl Solver<'_> {
    pub(crate) fn run_mounts(&self, ins: &Instruction, workdir: &str) -> Result<Resolved> {
        let mut out = Resolved {
            mounts: Vec::new(),
            key: Vec::new(),
            from_stage: Vec::new(),
        };
        for spec in ins.flag_all("mount") {
            let mut kv = std::collections::BTreeMap::new();
            for part in spec.split(',') {
                let (k, v) = part.split_once('=').unwrap_or((part, "true"));
                kv.insert(k.trim().to_lowercase(), v.trim().to_owned());
            }
            let kind = kv.get("type").map(String::as_str).unwrap_or("bind");
            let target = kv
                .get("target")
                .or_else(|| kv.get("dst"))
                .or_else(|| kv.get("destination"))
                .cloned();
            let target = match target {
                Some(t) if t.starts_with('/') => t,
                Some(t) => format!("{}/{t}", workdir.trim_end_matches('/')),
                None if matches!(kind, "secret") => {
                    format!("/run/secrets/{}", kv.get("id").cloned().unwrap_or_default())
                }
                None if matches!(kind, "ssh") => "/run/buildkit/ssh_agent.0".to_owned(),
                None => return Err(self.fail(ins, &format!("--mount={spec}: target= is required"))),
            };
            let uid = kv.get("uid").and_then(|v| v.parse().ok()).unwrap_or(0);
            let gid = kv.get("gid").and_then(|v| v.parse().ok()).unwrap_or(0);
            // Secret and ssh mounts: may the build go on without the
            // secret or agent, and the mode of the file or socket.
            let required = kv.get("required").is_some_and(|v| v != "false");
            let mode_or = |default: u32| kv.get("mode").and_then(|m| octal(m)).unwrap_or(default);
            let ro = kv
                .get("ro")
                .or_else(|| kv.get("readonly"))
                .is_some_and(|v| v != "false");
            match kind {
                "cache" => {
                    let id = kv.get("id").cloned().unwrap_or_else(|| target.clone());
                    let sharing = match kv.get("sharing").map(String::as_str) {
                        None | Some("shared") => CacheSharing::Shared,
                        Some("private") => CacheSharing::Private,
                        Some("locked") => CacheSharing::Locked,
                        Some(o) => {
                            return Err(self.fail(
                                ins,
                                &format!(
                                    "--mount: sharing={o}: expected shared, private or locked"
                                ),
                            ));
                        }
                    };
                    let mode = kv.get("mode").and_then(|m| octal(m)).unwrap_or(0o755);
                    // BuildKit keeps a cache per id and per the directory it
                    // starts from (made with uid, gid and mode), so another
                    // owner or mode is another cache.
                    let name = if (uid, gid, mode) == (0, 0, 0o755) {
                        id.clone()
                    } else {
                        format!("{id}\0{uid}:{gid}:{mode:o}")
                    };
                    let dir = self
                        .store
                        .root()
                        .join("cache-mounts")
                        .join(blake3::hash(name.as_bytes()).to_hex().as_str());
                    std::fs::create_dir_all(&dir)
                        .map_err(crate::error::io(format!("creating {}", dir.display())))?;
                    // A cache's contents never enter the key: that is its point.
                    out.key.extend(
                        format!("cache {id} {target} {sharing:?} {ro} {uid} {gid} {mode}\0")
                            .as_bytes(),
                    );
                    out.mounts.push(Mount::Cache {
                        target,
                        dir,
                        sharing,
                        readonly: ro,
                        uid,
                        gid,
                        mode,
                    });
                }
                "bind" => {
                    let from = kv.get("from").cloned();
                    let source = kv
                        .get("source")
                        .or_else(|| kv.get("src"))
                        .cloned()
                        .unwrap_or_default();
                    let mut h = blake3::Hasher::new();
                    let path = match &from {
                        Some(f) => {
                            let tree = self.stage_tree(f, ins)?;
                            let resolved = tree.resolve(&source, true).map_err(|e| {
                                self.fail(ins, &format!("--mount source={source}: {e}"))
                            })?;
                            if tree.get(&resolved).is_none() {
                                return Err(self
                                    .fail(ins, &format!("--mount: source {source:?} not found")));
                            }
                            crate::copy::hash_tree_at(&tree, &resolved, None, &mut h)?;
                            out.from_stage.push(StageBind {
                                mount: out.mounts.len(),
                                from: f.clone(),
                                path: resolved,
                            });
                            // Set by `materialise_mounts` if the step runs.
                            PathBuf::new()
                        }
                        None => {
                            let path = strata_oci::path::secure_join(
                                &self.opts.context,
                                Path::new(&source),
                            )
                            .map_err(|e| {
                                self.fail(ins, &format!("--mount source={source}: {e}"))
                            })?;
                            if std::fs::symlink_metadata(&path).is_err() {
                                return Err(self
                                    .fail(ins, &format!("--mount: source {source:?} not found")));
                            }
                            crate::context::hash_tree(
                                &path,
                                source.trim_matches('/'),
                                Some(&self.context_files.ignore),
                                None,
                                Some(&self.context_files.hash_cache),
                                &mut h,
                            )?;
                            path
                        }
                    };
                    out.key.extend(
                        format!(
                            "bind {from:?} {source} {target} {}\0",
                            kv.contains_key("rw")
                        )
                        .as_bytes(),
                    );
                    out.key.extend(h.finalize().as_bytes());
                    let rw = kv
                        .get("rw")
                        .or_else(|| kv.get("readwrite"))
                        .is_some_and(|v| v != "false");
                    out.mounts.push(Mount::Bind {
                        target,
                        source: path,
                        readwrite: rw,
                    });
                }
                "tmpfs" => {
                    let size = match kv.get("size") {
                        Some(v) => Some(ram_in_bytes(v).ok_or_else(|| {
                            self.fail(
                                ins,
                                &format!(
                                    "--mount={spec}: size={v}: expected a size in bytes, \
                                     optionally with a unit (128m, 1g)"
                                ),
                            )
                        })?),
                        None => None,
                    };
                    out.key
                        .extend(format!("tmpfs {target} {size:?}\0").as_bytes());
                    out.mounts.push(Mount::Tmpfs { target, size });
                }
                // Both hand the step something of the caller's (a secret's
                // value, the agent's socket) with an owner and a mode; the
                // value never enters the key or any layer.
                "secret" | "ssh" => {
                    let secret = kind == "secret";
                    let id = kv.get("id").cloned().unwrap_or_else(|| {
                        Path::new(&target)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    });
                    let mode = mode_or(if secret { 0o400 } else { 0o600 });
                    // `Mount::$variant` at the target with the owner and
                    // mode, holding what the caller gave.
                    macro_rules! handed {
                        ($variant:ident, $field:ident) => {
                            Mount::$variant {
                                target: target.clone(),
                                $field,
                                uid,
                                gid,
                                mode,
                            }
                        };
                    }
                    let (given, key, missing) = if secret {
                        (
                            self.opts
                                .secrets
                                .get(&id)
                                .cloned()
                                .map(|data| handed!(Secret, data)),
                            format!("secret {id} {target} {uid} {gid} {mode}\0"),
                            format!(
                                "secret {id} is required but was not given (strata build --secret id={id},src=FILE)"
                            ),
                        )
                    } else {
                        (
                            self.opts.ssh_socket.clone().map(|socket| handed!(Ssh, socket)),
                            format!("ssh {target} {uid} {gid} {mode}\0"),
                            "an ssh mount is required but no agent was given (strata build --ssh default)".to_owned(),
                        )
                    };
                    let Some(mount) = given else {
                        if required {
                            return Err(self.fail(ins, &missing));
                        }
                        continue;
                    };
                    out.key.extend(key.as_bytes());
                    out.mounts.push(mount);
                }
                other => {
                    return Err(self.fail(
                        ins,
                        &format!(
                            "--mount: unknown type {other:?} (bind, cache, tmpfs, secret, ssh)"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Gives bind mounts from another stage or an image their source on
    /// disk: the mounted path of that stage's tree, made from its snapshots
    /// (once per build and path; see [`Solver::stage_subtree`]).
    pub(crate) fn materialise_mounts(&self, r: &mut Resolved, ins: &Instruction) -> Result<()> {
        for b in &r.from_stage {
            let Some(Mount::Bind {
                source, readwrite, ..
            }) = r.mounts.get_mut(b.mount)
            else {
                continue;
            };
            // A writable mount is made of copies: a single file is bound as
            // it is, so what the step writes would land in a snapshot's file.
            *source = self.stage_subtree(&b.from, &b.path, !*readwrite, ins)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ram_in_bytes;

    #[test]
    fn tmpfs_sizes_read_as_buildkit_reads_them() {
        assert_eq!(ram_in_bytes("128m"), Some(128 << 20));
        assert_eq!(ram_in_bytes("64MiB"), Some(64 << 20));
        assert_eq!(ram_in_bytes("1g"), Some(1 << 30));
        assert_eq!(ram_in_bytes("4096"), Some(4096));
        assert_eq!(ram_in_bytes("1.5k"), Some(1536));
        assert_eq!(ram_in_bytes("10 kb"), Some(10 << 10));
        assert_eq!(ram_in_bytes("12x"), None);
        assert_eq!(ram_in_bytes("m"), None);
        assert_eq!(ram_in_bytes("-1"), None);
    }
}
