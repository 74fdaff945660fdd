//! COPY and ADD: select sources (context, another stage, an image), build a
//! fresh layer directory with docker's path rules, and write it as a layer.

mod chmod;
mod chown;
mod select;
mod tree;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_frontend::{Args, Instruction};
use strata_store::LayerRecord;

use chmod::Chmod;
use select::{Source, is_archive, resolve_in_image};
use tree::{TreeRules, copy_tree};

use crate::cache::key_of;
use crate::context;
use crate::error::{Result, io, other};
use crate::solver::{Solver, State, clean_abs};

impl Solver<'_> {
    pub(crate) fn copy_step(
        &self,
        ins: &Instruction,
        state: &mut State,
        args: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool> {
        let is_add = ins.keyword == "add";
        let env = state.config.config.env.clone().unwrap_or_default();
        let escape = self.plan.df.escape;
        let lookup = |k: &str| strata_frontend::env_get(&env, k).or_else(|| args.get(k).cloned());
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
        let dest_rel = clean_abs(Path::new(&dest_abs))
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
        let ignore = if use_ignore {
            Some(&self.context_files.ignore)
        } else {
            None
        };
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
            let rel = clean_abs(Path::new(&format!("/{w}")))
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
                    .map(|i| clean_abs(Path::new(&format!("/{}", &w[..i]))))
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
                Some(&self.context_files.hash_cache)
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
        let _once = crate::solver::once::claim(&key);
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
        let rules = TreeRules {
            ignore,
            exclude: exclude.as_ref(),
            owner,
            chmod: chmod_bits,
        };
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
                    "",
                    rules,
                    false,
                )?;
                continue;
            }
            if meta.is_dir() {
                let created_owner = chown.as_ref().map(|_| (uid, gid));
                self.make_parents_owned(&layer_root, &dest_rel, &lowers, true, created_owner)?;
                copy_tree(&s.path, &dest_path, &s.rel, "", rules, true)?;
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
                .map_err(|e| {
                    self.fail(
                        ins,
                        &format!("extracting {}: {}", s.rel, crate::error::chain(&e)),
                    )
                })?;
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
                    "",
                    TreeRules {
                        ignore: None,
                        exclude: None,
                        ..rules
                    },
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

    /// The merged root filesystem of a stage (by name or index) or an image,
    /// for COPY --from; materialised once per build.
    pub(crate) fn rootfs_of(&self, from: &str, ins: &Instruction) -> Result<PathBuf> {
        // Held throughout, so two stages asking at once materialise it once.
        let mut rootfs = self.shared.rootfs.lock().expect("rootfs map");
        if let Some(d) = rootfs.get(from) {
            return Ok(d.path().to_owned());
        }
        let lower = from.to_lowercase();
        let stage_state = {
            let done = self.schedule.done.lock().expect("done map");
            from.parse::<usize>()
                .ok()
                .and_then(|i| done.get(&i))
                .or_else(|| {
                    let s = self
                        .plan
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
                let want = self.plan.inputs.target_platform.clone();
                self.image(from, ins, &want)?.layers
            }
        };
        let dir = self.scratch()?;
        for l in &layers {
            let r = self.store.open_layer_tar(l)?;
            strata_oci::apply::apply_layer(r, dir.path(), &mut strata_oci::apply::DeleteWhiteouts)
                .map_err(|e| {
                    other(format!(
                        "unpacking {}: {}",
                        l.diff_id,
                        crate::error::chain(&e)
                    ))
                })?;
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
}
