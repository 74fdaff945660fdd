//! COPY and ADD: select sources (context, another stage, an image), build a
//! fresh layer directory with docker's path rules, and write it as a layer.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_frontend::{Args, Instruction};

use strata_store::LayerRecord;

use crate::{BuildError, Result, Solver, State, context, io, key_of, other};

/// A selected source: where it is on disk and its path relative to the
/// source root (for ignore rules and the cache key).
struct Source {
    path: PathBuf,
    rel: String,
    /// With `--parents`: the path kept under the destination.
    keep: String,
}

impl Solver<'_> {
    pub(crate) fn copy_step(
        &self,
        ins: &Instruction,
        state: &mut State,
        args: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool> {
        let is_add = ins.keyword == "add";
        let env = state.config.config.env.clone().unwrap_or_default();
        let escape = self.df.escape;
        let lookup = |k: &str| crate::env_get(&env, k).or_else(|| args.get(k).cloned());
        let words: Vec<String> = match &ins.args {
            Args::Exec(v) => v
                .iter()
                .map(|w| strata_frontend::expand_word(w, &lookup, escape))
                .collect::<Result<_, _>>()
                .map_err(|e| self.fail(ins, &e.to_string()))?,
            Args::Shell(s) => strata_frontend::split_words(s, &lookup, escape)
                .map_err(|e| self.fail(ins, &e.to_string()))?,
        };
        if words.len() < 2 {
            return Err(self.fail(
                ins,
                &format!(
                    "{} requires at least two arguments: source(s) and destination",
                    ins.keyword.to_uppercase()
                ),
            ));
        }
        let (dest_word, source_words) = words.split_last().ok_or_else(|| other("no arguments"))?;
        let workdir = state
            .config
            .config
            .working_dir
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/".into());
        // `dir/`, `.` and `dir/.` name a directory; so does an existing
        // directory in the image (checked once the lowers are known).
        let mut dest_is_dir_syntax =
            dest_word.ends_with('/') || dest_word == "." || dest_word.ends_with("/.");
        let dest_abs = if dest_word.starts_with('/') {
            dest_word.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), dest_word)
        };
        let dest_rel = crate::clean_abs(Path::new(&dest_abs))
            .trim_start_matches('/')
            .to_owned();

        // Where sources come from.
        let from = ins
            .flag("from")
            .map(|f| strata_frontend::expand_word(f, &lookup, escape))
            .transpose()
            .map_err(|e| self.fail(ins, &e.to_string()))?;
        let scratch = self.scratch()?;
        let inline_dir = scratch.path().join("inline");
        let (src_root, use_ignore) = match &from {
            None => (self.opts.context.clone(), true),
            Some(f) => (self.rootfs_of(f, ins)?, false),
        };

        // `--exclude=PATTERN` (repeatable), matched like .dockerignore lines
        // against paths relative to the source root.
        let excludes: Vec<String> = ins
            .flag_all("exclude")
            .into_iter()
            .map(|v| strata_frontend::expand_word(v, &lookup, escape))
            .collect::<Result<_, _>>()
            .map_err(|e| self.fail(ins, &e.to_string()))?;
        // BuildKit matches them against paths inside each source (a
        // directory's contents, or a file's name), as .dockerignore lines.
        let exclude = if excludes.is_empty() {
            None
        } else {
            Some(context::Ignore::parse(&excludes.join("\n"))?)
        };
        let ignore = if use_ignore { Some(&self.ignore) } else { None };
        let parents = match ins.flag("parents") {
            None | Some("false") => false,
            Some("" | "true") => true,
            Some(v) => {
                return Err(self.fail(ins, &format!("--parents={v}: expected true or false")));
            }
        };
        let mut sources: Vec<Source> = Vec::new();
        for w in source_words {
            if let Some(name) = w.strip_prefix("<<") {
                let name = name
                    .trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'');
                let h = ins
                    .heredocs
                    .iter()
                    .find(|h| h.name == name)
                    .ok_or_else(|| self.fail(ins, &format!("no heredoc named {name}")))?;
                fs::create_dir_all(&inline_dir).map_err(io("creating a scratch dir"))?;
                let content = if h.quoted {
                    h.content.clone()
                } else {
                    strata_frontend::expand_word(&h.content, &lookup, escape)
                        .unwrap_or_else(|_| h.content.clone())
                };
                let p = inline_dir.join(name);
                fs::write(&p, content).map_err(io("writing an inline file"))?;
                // BuildKit makes inline files 0664 (`llb.Mkfile(f, 0664, ..)`),
                // whatever the umask; COPY keeps that unless --chmod is given.
                fs::set_permissions(&p, fs::Permissions::from_mode(0o664))
                    .map_err(io("chmod of an inline file"))?;
                sources.push(Source {
                    path: p,
                    rel: String::new(),
                    keep: String::new(),
                });
                continue;
            }
            if is_add
                && (w.starts_with("http://") || w.starts_with("https://") || w.starts_with("git@"))
            {
                return Err(self.fail(ins, &format!("ADD {w}: remote sources are not supported by this version of strata; download the file into the context and COPY it")));
            }
            let rel = crate::clean_abs(Path::new(&format!("/{w}")))
                .trim_start_matches('/')
                .to_owned();
            let mut matched = self.select(&src_root, &rel, ignore)?;
            if let Some(ex) = &exclude {
                matched.retain(|m| {
                    m.path.is_dir()
                        || !m
                            .path
                            .file_name()
                            .is_some_and(|n| ex.excluded(&n.to_string_lossy()))
                });
            }
            // `--parents` keeps each source's path, from the `/./` pivot when
            // the source names one (`src/./pkg/x` keeps `pkg/x`).
            if parents {
                let pivot = w
                    .find("/./")
                    .map(|i| crate::clean_abs(Path::new(&format!("/{}", &w[..i]))))
                    .map(|p| p.trim_start_matches('/').to_owned());
                for m in &mut matched {
                    m.keep = match &pivot {
                        Some(p) if !p.is_empty() => m
                            .rel
                            .strip_prefix(p.as_str())
                            .map(|r| r.trim_start_matches('/').to_owned())
                            .unwrap_or_else(|| m.rel.clone()),
                        _ => m.rel.clone(),
                    };
                }
            }
            if matched.is_empty() {
                return Err(self.fail(
                    ins,
                    &format!("failed to compute cache key: \"/{rel}\" not found"),
                ));
            }
            sources.extend(matched);
        }
        let many = sources.len() > 1;
        if (many || parents) && !dest_is_dir_syntax {
            return Err(self.fail(ins, &format!("When using {} with more than one source file, the destination must be a directory and end with a /", ins.keyword.to_uppercase())));
        }

        // Cache key: parent, instruction, flags, dest, and source contents.
        let chown = ins
            .flag("chown")
            .map(|c| strata_frontend::expand_word(c, &lookup, escape))
            .transpose()
            .map_err(|e| self.fail(ins, &e.to_string()))?;
        let chmod = ins.flag("chmod").map(str::to_owned);
        let mut h = blake3::Hasher::new();
        for s in &sources {
            h.update(s.rel.as_bytes());
            let cache = if use_ignore {
                Some(&self.hash_cache)
            } else {
                None
            };
            let ex = if s.path.is_dir() {
                exclude.as_ref()
            } else {
                None
            };
            context::hash_tree(&s.path, &s.rel, ignore, ex, cache, &mut h)?;
        }
        let flags = format!(
            "{:?} {:?} {:?} {} {:?} {}",
            chown,
            chmod,
            from,
            ins.flag("link").is_some(),
            excludes,
            parents
        );
        let link = ins.flag("link").is_some();
        let parent_key = if link {
            String::new()
        } else {
            state.key.clone()
        };
        let key = key_of(&[
            parent_key.as_bytes(),
            ins.keyword.as_bytes(),
            flags.as_bytes(),
            dest_abs.as_bytes(),
            source_words.join("\0").as_bytes(),
            h.finalize().as_bytes(),
        ]);
        let key = if link {
            key_of(&[state.key.as_bytes(), key.as_bytes()])
        } else {
            key
        };
        let history = format!(
            "{} {} {} # buildkit",
            ins.keyword.to_uppercase(),
            source_words.join(" "),
            dest_word
        );
        if self.cache_hit(&key, state)? {
            return Ok(true);
        }

        let (uid, gid) = match &chown {
            Some(c) => self.resolve_chown(c, state, ins)?,
            None => (0, 0),
        };
        let chmod_mode = match &chmod {
            Some(m) => {
                Some(Chmod::parse(m).map_err(|e| self.fail(ins, &format!("--chmod={m}: {e}")))?)
            }
            None => None,
        };
        let chmod_bits = chmod_mode.as_ref();
        let layer_root = scratch.path().join("root");
        fs::create_dir_all(&layer_root).map_err(io("creating a layer dir"))?;
        let lowers = if link {
            Vec::new()
        } else {
            self.lowers(&state.layers)?
        };
        // Symlinks in the image on the way to the destination are followed,
        // within the root (BuildKit resolves the destination in the image).
        let dest_rel = resolve_in_image(&lowers, &dest_rel)
            .map_err(|e| self.fail(ins, &format!("destination {dest_abs}: {e}")))?;
        if !dest_is_dir_syntax
            && strata_exec::snapshot::lookup(&lowers, Path::new(&dest_rel))
                .is_some_and(|f| f.meta.is_dir())
        {
            dest_is_dir_syntax = true;
        }
        let keep_owner = from.is_some() && chown.is_none();
        let owner = if keep_owner { None } else { Some((uid, gid)) };
        let dest_path = layer_root.join(&dest_rel);
        for s in &sources {
            let meta = fs::symlink_metadata(&s.path)
                .map_err(io(format!("reading {}", s.path.display())))?;
            if parents && !s.keep.is_empty() {
                let target_rel = format!("{}/{}", dest_rel, s.keep)
                    .trim_start_matches('/')
                    .to_owned();
                let parent_rel = Path::new(&target_rel)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.make_parents_owned(
                    &layer_root,
                    &parent_rel,
                    &lowers,
                    true,
                    chown.as_ref().map(|_| (uid, gid)),
                )?;
                copy_tree(
                    &s.path,
                    &layer_root.join(&target_rel),
                    &s.rel,
                    ignore,
                    exclude.as_ref(),
                    "",
                    owner,
                    chmod_bits,
                    false,
                )?;
                continue;
            }
            if meta.is_dir() {
                let created_owner = chown.as_ref().map(|_| (uid, gid));
                self.make_parents_owned(&layer_root, &dest_rel, &lowers, true, created_owner)?;
                copy_tree(
                    &s.path,
                    &dest_path,
                    &s.rel,
                    ignore,
                    exclude.as_ref(),
                    "",
                    owner,
                    chmod_bits,
                    true,
                )?;
            } else if is_add && !meta.file_type().is_symlink() && is_archive(&s.path) {
                let created_owner = chown.as_ref().map(|_| (uid, gid));
                self.make_parents_owned(&layer_root, &dest_rel, &lowers, true, created_owner)?;
                let f =
                    fs::File::open(&s.path).map_err(io(format!("opening {}", s.path.display())))?;
                let (_, r) = strata_oci::compress::decompress(f)
                    .map_err(io(format!("reading {}", s.path.display())))?;
                strata_oci::apply::apply_layer(
                    r,
                    &dest_path,
                    &mut strata_oci::apply::DeleteWhiteouts,
                )
                .map_err(|e| self.fail(ins, &format!("extracting {}: {e}", s.rel)))?;
            } else {
                let name = s.path.file_name().map(|n| n.to_owned()).unwrap_or_default();
                let target_rel = if dest_is_dir_syntax || many {
                    format!("{}/{}", dest_rel, name.to_string_lossy())
                } else {
                    dest_rel.clone()
                };
                let target_rel = target_rel.trim_start_matches('/').to_owned();
                let parent_rel = Path::new(&target_rel)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let created_owner = chown.as_ref().map(|_| (uid, gid));
                self.make_parents_owned(&layer_root, &parent_rel, &lowers, true, created_owner)?;
                copy_tree(
                    &s.path,
                    &layer_root.join(&target_rel),
                    "",
                    None,
                    None,
                    "",
                    owner,
                    chmod_bits,
                    false,
                )?;
            }
        }
        let changes = strata_oci::layer::changes_for_tree(&layer_root)
            .map_err(|e| other(format!("listing the layer: {e}")))?;
        let layer = if changes.is_empty() {
            None
        } else {
            Some(self.write_layer(&layer_root, &changes)?)
        };
        // The layer directory holds exactly the layer (no whiteouts): it
        // becomes the snapshot a later step mounts, rather than being deleted
        // now and extracted again then.
        if let Some(l) = &layer {
            self.adopt_snapshot(l, &layer_root)?;
        }
        self.finish_step(&key, layer, state, history)?;
        Ok(false)
    }

    /// Sources matching `rel` (any component may hold `*`, `?`, `[...]`, as
    /// BuildKit's `COPY */x.txt`) under `root`, never escaping it; matches
    /// in path order.
    fn select(
        &self,
        root: &Path,
        rel: &str,
        ignore: Option<&context::Ignore>,
    ) -> Result<Vec<Source>> {
        let excluded = |r: &str| !r.is_empty() && ignore.is_some_and(|i| i.excluded(r));
        let join = |dir: &str, name: &str| {
            if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            }
        };
        // Candidate paths after each component; a glob component is matched
        // against the entries of each candidate directory.
        let mut candidates = vec![String::new()];
        let mut last_is_glob = false;
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            last_is_glob = comp.contains(['*', '?', '[']);
            if !last_is_glob {
                next.extend(candidates.iter().map(|dir| join(dir, comp)));
                candidates = next;
                continue;
            }
            let glob = globset::GlobBuilder::new(comp)
                .literal_separator(true)
                .build()
                .map_err(|e| other(format!("bad pattern {rel}: {e}")))?
                .compile_matcher();
            for dir in &candidates {
                let d = strata_oci::path::secure_join(root, Path::new(dir))
                    .map_err(|e| other(format!("{dir}: {e}")))?;
                let Ok(entries) = fs::read_dir(&d) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob.is_match(n))
                    .collect();
                names.sort();
                next.extend(names.iter().map(|n| join(dir, n)));
            }
            candidates = next;
        }
        let mut out = Vec::new();
        for r in candidates {
            // A name a pattern matched is taken as it is (a symlink stays a
            // symlink); a name written out is followed, as before.
            let p = match r.rsplit_once('/').filter(|_| last_is_glob) {
                Some((dir, name)) => {
                    strata_oci::path::secure_join(root, Path::new(dir)).map(|d| d.join(name))
                }
                None if last_is_glob => Ok(root.join(&r)),
                None => strata_oci::path::secure_join(root, Path::new(&r)),
            }
            .map_err(|e| other(format!("{r}: {e}")))?;
            // An excluded directory an exception may re-include from is
            // still a source (`*`, `subdir`, `!*/sub1*`: `COPY subdir`).
            let reincluded = || ignore.is_some_and(|i| i.descend_excluded(&r));
            if (excluded(&r) && !reincluded()) || fs::symlink_metadata(&p).is_err() {
                continue;
            }
            out.push(Source {
                path: p,
                rel: r,
                keep: String::new(),
            });
        }
        Ok(out)
    }

    /// The merged root filesystem of a stage (by name or index) or an image,
    /// for COPY --from; materialised once per build.
    pub(crate) fn rootfs_of(&self, from: &str, ins: &Instruction) -> Result<PathBuf> {
        // Held throughout, so two stages asking at once materialise it once.
        let mut rootfs = self.rootfs.lock().expect("rootfs map");
        if let Some(d) = rootfs.get(from) {
            return Ok(d.path().to_owned());
        }
        let lower = from.to_lowercase();
        let stage_state = {
            let done = self.done.lock().expect("done map");
            from.parse::<usize>()
                .ok()
                .and_then(|i| done.get(&i))
                .or_else(|| {
                    let s = self
                        .stages
                        .iter()
                        .find(|s| s.name.as_deref() == Some(lower.as_str()))?;
                    done.get(&s.index)
                })
                .cloned()
        };
        let layers = match stage_state {
            Some(s) => s.layers,
            None => {
                let want = self.inputs.target_platform.clone();
                self.image(from, ins, &want)?.layers
            }
        };
        let dir = self.scratch()?;
        for l in &layers {
            let r = self.store.open_layer_tar(l)?;
            strata_oci::apply::apply_layer(r, dir.path(), &mut strata_oci::apply::DeleteWhiteouts)
                .map_err(|e| other(format!("unpacking {}: {e}", l.diff_id)))?;
        }
        let p = dir.path().to_owned();
        rootfs.insert(from.to_owned(), dir);
        Ok(p)
    }

    /// `--chown=user[:group]` by number, or by name from the image's
    /// /etc/passwd and /etc/group.
    /// The layer WORKDIR adds when its directory is missing: the missing
    /// directories, owned by `user` (the current USER; root when empty).
    pub(crate) fn workdir_layer(
        &self,
        dir: &str,
        user: &str,
        state: &State,
        ins: &Instruction,
    ) -> Result<Option<LayerRecord>> {
        let lowers = self.lowers(&state.layers)?;
        let rel = resolve_in_image(&lowers, dir.trim_start_matches('/'))
            .map_err(|e| self.fail(ins, &format!("WORKDIR {dir}: {e}")))?;
        if rel.is_empty()
            || strata_exec::snapshot::lookup(&lowers, Path::new(&rel))
                .is_some_and(|f| f.meta.is_dir())
        {
            return Ok(None);
        }
        let owner = if user.is_empty() {
            (0, 0)
        } else {
            self.resolve_chown(user, state, ins)?
        };
        let scratch = self.scratch()?;
        let layer_root = scratch.path().join("root");
        fs::create_dir_all(&layer_root).map_err(io("creating a layer dir"))?;
        self.make_parents_owned(&layer_root, &rel, &lowers, true, Some(owner))?;
        let changes = strata_oci::layer::changes_for_tree(&layer_root)
            .map_err(|e| other(format!("listing the layer: {e}")))?;
        let layer = self.write_layer(&layer_root, &changes)?;
        self.adopt_snapshot(&layer, &layer_root)?;
        Ok(Some(layer))
    }

    fn resolve_chown(&self, spec: &str, state: &State, ins: &Instruction) -> Result<(u32, u32)> {
        let (u, g) = spec
            .split_once(':')
            .map(|(u, g)| (u, Some(g)))
            .unwrap_or((spec, None));
        let lowers = self.lowers(&state.layers)?;
        let read = |rel: &str| -> String {
            strata_exec::snapshot::lookup(&lowers, Path::new(rel))
                .and_then(|f| fs::read_to_string(f.path).ok())
                .unwrap_or_default()
        };
        let find = |db: &str, name: &str| -> Option<(u32, u32)> {
            db.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name)).then(|| {
                    Some((
                        f.get(2)?.parse().ok()?,
                        f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
                    ))
                })?
            })
        };
        let passwd = read("etc/passwd");
        let (uid, primary) = match u.parse::<u32>() {
            Ok(n) => (n, n),
            Err(_) => find(&passwd, u).ok_or_else(|| {
                self.fail(
                    ins,
                    &format!("--chown={spec}: unable to find user {u} in the image's /etc/passwd"),
                )
            })?,
        };
        let gid = match g {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => find(&read("etc/group"), g)
                    .map(|(gid, _)| gid)
                    .ok_or_else(|| {
                        self.fail(
                            ins,
                            &format!(
                                "--chown={spec}: unable to find group {g} in the image's /etc/group"
                            ),
                        )
                    })?,
            },
        };
        Ok((uid, gid))
    }

    /// Creates `rel`'s directories in the layer dir, each with the metadata
    /// it has in the image (so the layer doesn't change existing parents);
    /// new ones are 0755 and owned by `owner`, else root (COPY --chown
    /// applies to the directories it creates, as in BuildKit).
    fn make_parents_owned(
        &self,
        layer_root: &Path,
        rel: &str,
        lowers: &[PathBuf],
        include_self: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let mut cur = PathBuf::new();
        let comps: Vec<_> = Path::new(rel).components().collect();
        let n = if include_self {
            comps.len()
        } else {
            comps.len().saturating_sub(1)
        };
        for c in comps.iter().take(n) {
            cur.push(c);
            let p = layer_root.join(&cur);
            if p.exists() {
                continue;
            }
            fs::create_dir(&p).map_err(io(format!("creating {}", p.display())))?;
            let (mode, uid, gid, mtime) = match strata_exec::snapshot::lookup(lowers, &cur) {
                Some(f) if f.meta.is_dir() => (
                    f.meta.mode() & 0o7777,
                    f.meta.uid(),
                    f.meta.gid(),
                    f.meta.mtime(),
                ),
                _ => {
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    (0o755, uid, gid, self.epoch)
                }
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io(format!("chmod {}", p.display())))?;
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", p.display())))?;
            set_mtime(&p, mtime)?;
        }
        Ok(())
    }
}

/// `rel` with every symlink on the way resolved as the image would, never
/// leaving its root (`..` stops at `/`, absolute targets restart from it).
/// The last component is followed only when it leads to something that
/// exists (BuildKit writes through a link to a file; a dangling link is
/// replaced).
fn resolve_in_image(lowers: &[PathBuf], rel: &str) -> std::result::Result<String, String> {
    let mut pending: std::collections::VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        out.push(c);
        let cur = out.join("/");
        let Some(found) = strata_exec::snapshot::lookup(lowers, Path::new(&cur)) else {
            continue;
        };
        if !found.meta.file_type().is_symlink() {
            continue;
        }
        let target = fs::read_link(&found.path).map_err(|e| e.to_string())?;
        let target = target.to_string_lossy().into_owned();
        let mut next = out.clone();
        next.pop();
        if target.starts_with('/') {
            next.clear();
        }
        let is_last = pending.is_empty();
        // Where the link leads, as components still to walk.
        let mut rest: std::collections::VecDeque<String> = target
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if is_last {
            // Only a link to an existing entry is followed at the end.
            let mut probe = next.clone();
            for c in &rest {
                match c.as_str() {
                    "." => {}
                    ".." => {
                        probe.pop();
                    }
                    c => probe.push(c.to_owned()),
                }
            }
            let leads_somewhere =
                strata_exec::snapshot::lookup(lowers, Path::new(&probe.join("/"))).is_some();
            if !leads_somewhere {
                continue;
            }
        }
        hops += 1;
        if hops > 40 {
            return Err("too many levels of symbolic links".into());
        }
        out = next;
        rest.extend(pending.drain(..));
        pending = rest;
    }
    Ok(out.join("/"))
}

fn is_archive(p: &Path) -> bool {
    let Ok(f) = fs::File::open(p) else {
        return false;
    };
    let Ok((_, mut r)) = strata_oci::compress::decompress(f) else {
        return false;
    };
    let mut block = [0u8; 512];
    if std::io::Read::read_exact(&mut r, &mut block).is_err() {
        return false;
    }
    // A tar header: "ustar" magic at offset 257.
    &block[257..262] == b"ustar"
}

fn set_mtime(p: &Path, secs: i64) -> Result<()> {
    let t = filetime_from(secs);
    let f = fs::File::options().read(true).open(p);
    match f {
        Ok(f)
            if !fs::symlink_metadata(p)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false) =>
        {
            f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
                .map_err(io(format!("setting times on {}", p.display())))
        }
        _ => Ok(()),
    }
}

fn filetime_from(secs: i64) -> std::time::SystemTime {
    if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH
    }
}

/// Copies `src` (file, symlink or directory) to `dst`. For a directory with
/// `contents_only`, its contents go into `dst` (docker's rule for COPY dir).
#[expect(
    clippy::too_many_arguments,
    reason = "one recursive walk; a struct would only rename them"
)]
fn copy_tree(
    src: &Path,
    dst: &Path,
    rel_base: &str,
    ignore: Option<&context::Ignore>,
    exclude: Option<&context::Ignore>,
    exclude_base: &str,
    owner: Option<(u32, u32)>,
    chmod: Option<&Chmod>,
    contents_only: bool,
) -> Result<()> {
    let meta = fs::symlink_metadata(src).map_err(io(format!("reading {}", src.display())))?;
    let ft = meta.file_type();
    let (uid, gid) = owner.unwrap_or((meta.uid(), meta.gid()));
    if ft.is_dir() {
        if !dst.exists() {
            fs::create_dir(dst).map_err(io(format!("creating {}", dst.display())))?;
        }
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(io(format!("reading {}", src.display())))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let rel = if rel_base.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel_base}/{}", name.to_string_lossy())
            };
            let local = if exclude_base.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{exclude_base}/{}", name.to_string_lossy())
            };
            if exclude.is_some_and(|ex| ex.excluded(&local)) {
                continue;
            }
            if let Some(ig) = ignore
                && ig.excluded(&rel)
            {
                // An excluded directory is walked for the exceptions that
                // may re-include something in it, and kept only if they do.
                let path = e.path();
                let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                if is_dir && ig.descend_excluded(&rel) {
                    let d = dst.join(&name);
                    let existed = d.symlink_metadata().is_ok();
                    copy_tree(
                        &path, &d, &rel, ignore, exclude, &local, owner, chmod, false,
                    )?;
                    let empty = fs::read_dir(&d).is_ok_and(|mut r| r.next().is_none());
                    if !existed && empty {
                        fs::remove_dir(&d).map_err(io(format!("removing {}", d.display())))?;
                    }
                }
                continue;
            }
            copy_tree(
                &e.path(),
                &dst.join(&name),
                &rel,
                ignore,
                exclude,
                &local,
                owner,
                chmod,
                false,
            )?;
        }
        if !contents_only {
            finish_meta(dst, &meta, uid, gid, chmod)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io(format!("reading link {}", src.display())))?;
        if dst.symlink_metadata().is_ok() {
            fs::remove_file(dst).map_err(io(format!("replacing {}", dst.display())))?;
        }
        std::os::unix::fs::symlink(&target, dst)
            .map_err(io(format!("creating link {}", dst.display())))?;
        std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
            .map_err(io(format!("chown {}", dst.display())))?;
    } else if ft.is_file() {
        if dst.is_dir() {
            return Err(BuildError::Other(format!(
                "cannot copy file {} over directory {}",
                src.display(),
                dst.display()
            )));
        }
        fs::copy(src, dst).map_err(io(format!("copying {}", src.display())))?;
        finish_meta(dst, &meta, uid, gid, chmod)?;
    }
    Ok(())
}

fn finish_meta(
    dst: &Path,
    meta: &fs::Metadata,
    uid: u32,
    gid: u32,
    chmod: Option<&Chmod>,
) -> Result<()> {
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
        .map_err(io(format!("chown {}", dst.display())))?;
    let mode = match chmod {
        Some(c) => c.apply(meta.mode() & 0o7777, meta.is_dir()),
        None => meta.mode() & 0o7777,
    };
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", dst.display())))?;
    set_mtime(dst, meta.mtime())
}

/// `--chmod`: an octal mode, or symbolic clauses as chmod(1) writes them
/// (`u+x`, `go-w`, `a=rX`, `u=rwx,g=rx,o=`), applied to each copied file's
/// own mode (`X`: execute only for directories and already-executable files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic(Vec<(u32, char, u32, bool)>),
}

impl Chmod {
    pub(crate) fn parse(s: &str) -> std::result::Result<Chmod, String> {
        if !s.is_empty() && s.chars().all(|c| c.is_digit(8)) {
            let m = u32::from_str_radix(s, 8).map_err(|e| e.to_string())?;
            if m > 0o7777 {
                return Err("mode out of range".into());
            }
            return Ok(Chmod::Octal(m));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let who_end = clause.find(['+', '-', '=']).ok_or_else(|| {
                format!("{clause:?}: expected an octal mode or [ugoa][+-=][rwxXst]")
            })?;
            let mut who = 0u32;
            for c in clause[..who_end].chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(format!("{clause:?}: unknown who {c:?}")),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            // Several operators may follow one who: `u+x-w`.
            let mut rest = &clause[who_end..];
            while let Some(op) = rest.chars().next() {
                let perms_end = rest[1..]
                    .find(['+', '-', '='])
                    .map_or(rest.len(), |i| i + 1);
                let mut bits = 0u32;
                let mut cond_x = false;
                for c in rest[1..perms_end].chars() {
                    bits |= match c {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' => {
                            cond_x = true;
                            0
                        }
                        's' => 0o6000,
                        't' => 0o1000,
                        _ => return Err(format!("{clause:?}: unknown permission {c:?}")),
                    };
                }
                clauses.push((who, op, bits, cond_x));
                rest = &rest[perms_end..];
            }
        }
        Ok(Chmod::Symbolic(clauses))
    }

    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for &(who, op, bits, cond_x) in clauses {
                    let mut b = bits;
                    if cond_x && (is_dir || m & 0o111 != 0) {
                        b |= 0o111;
                    }
                    let b = b & who;
                    m = match op {
                        '+' => m | b,
                        '-' => m & !b,
                        // `=` clears what `who` covers (special bits too) first.
                        _ => (m & !(who & 0o7777)) | b,
                    };
                }
                m
            }
        }
    }
}

#[cfg(test)]
mod chmod_tests {
    use super::Chmod;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, dir)
    }

    // Expected values are what chmod(1) gives for the same mode and clause.
    #[test]
    fn symbolic_modes_follow_chmod() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=rX", 0o640, false), 0o444);
        assert_eq!(sym("a=rX", 0o750, false), 0o555);
        assert_eq!(sym("a=rX", 0o700, true), 0o555);
        assert_eq!(sym("u=rwx,g=rx,o=", 0o777, false), 0o750);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u+x-w", 0o644, false), 0o544);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("o+t", 0o777, true), 0o1777);
        assert_eq!(Chmod::parse("755").unwrap().apply(0o600, false), 0o755);
    }

    #[test]
    fn bad_modes_are_refused() {
        for bad in ["u+q", "z+x", "rwx", "", "99999"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?}");
        }
    }
}
