//! COPY and ADD: what the instruction asks (`CopyRequest`), the sources it
//! selects (the context, or another stage's or image's content index), the
//! step's cache key, and on a miss a fresh layer directory built with
//! docker's path rules and written as a layer.

// What the instruction asks, first; then how it is carried out.
mod request;

mod chmod;
mod chown;
mod layered;
mod owners;
mod reuse;
mod select;
mod stage_tree;
mod tree;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_frontend::{Args, Instruction};
use strata_store::{LayerRecord, MergedTree};

use chmod::Chmod;
use layered::LayeredSource;
use request::{CopyRequest, copy_history};
use select::{Source, is_archive, resolve_in_image};
pub(crate) use stage_tree::{hash_tree_at, tree_is_dir};
use tree::{TreeRules, copy_tree};

use crate::api::InternalWork;
use crate::cache::key_of;
use crate::context;
use crate::error::{Result, context, io, other};
use crate::solver::{Solver, State, clean_abs};

/// A COPY heredoc's text with its quotes escaped, so that expanding it
/// substitutes variables everywhere and keeps quotes as written, as
/// BuildKit's `ExpandRaw` does (a lexer with `SkipProcessQuotes` and `\`
/// as the escape, whatever the Dockerfile's): `'${name}'` gives `'world'`.
/// An escape and the character after it are left as they are.
fn quotes_as_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '\'' | '"' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

impl Solver<'_> {
    pub(crate) fn copy_step(
        &self,
        ins: &Instruction,
        state: &mut State,
        args: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool> {
        owners::begin();
        let env = state.config.config.env.clone().unwrap_or_default();
        let lookup = |k: &str| strata_frontend::env_get(&env, k).or_else(|| args.get(k).cloned());
        let req = self.copy_request(ins, state, &lookup)?;
        let scratch = self.scratch()?;
        let tree = match &req.from {
            Some(f) => Some(self.stage_tree(f, ins)?),
            None => None,
        };
        // Absolute, so that an inline file is never taken for a path in a
        // stage's tree (those are relative until materialised).
        let inline_dir = std::path::absolute(scratch.path().join("inline"))
            .map_err(io("resolving the scratch dir"))?;
        let mut sources = self.copy_sources(ins, &req, tree.as_deref(), &lookup, &inline_dir)?;
        let (key, identity) = self.copy_key(&req, state, &sources, tree.as_deref())?;
        let history = copy_history(&req);
        let _once = crate::solver::once::claim(&key);
        if self.cache_hit(&key, state)? {
            return Ok(true);
        }
        // Sources in another stage are read from its snapshots; ADD (which
        // may unpack an archive) reads them from a materialised tree, as
        // does a tree with names that are not UTF-8 (the index holds them
        // lossily, so they cannot be looked up in the snapshots).
        let layered = match (&req.from, tree) {
            (Some(f), Some(tree))
                if !req.is_add
                    && sources.iter().any(Source::in_tree)
                    && stage_tree::names_are_exact(&tree) =>
            {
                let lowers = self.lowers(&self.source_layers(f, ins)?)?;
                Some(LayeredSource { tree, lowers })
            }
            (Some(f), _) => {
                self.materialise_sources(f, ins, &mut sources)?;
                None
            }
            (None, _) => None,
        };
        let layer_root = scratch.path().join("root");
        fs::create_dir_all(&layer_root).map_err(io("creating a layer dir"))?;
        let started = std::time::Instant::now();
        // COPY from the context only: ADD may unpack an archive over a
        // linked file, and `--from` sources have no context hashes.
        let reusable = (!req.is_add && req.from.is_none()).then_some(identity.as_str());
        let files = self.previous_copies(reusable, state, &layer_root)?;
        let input = CopyInput {
            sources: &sources,
            layered: layered.as_ref(),
            files: &files,
        };
        self.copy_into_layer(ins, &req, state, &input, &layer_root)?;
        owners::apply_pending(&layer_root)?;
        self.report_copies(&files, started);
        let changes = strata_oci::layer::changes_for_tree(&layer_root)
            .map_err(context("listing the layer"))?;
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
            if let Some(id) = reusable {
                reuse::record_layer(self.store, id, &l.diff_id)?;
            }
        }
        self.finish_step(&key, layer, state, history)?;
        Ok(false)
    }

    /// Expands the instruction's words and flags and checks their shape.
    fn copy_request(
        &self,
        ins: &Instruction,
        state: &State,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CopyRequest> {
        let is_add = ins.keyword == "add";
        let escape = self.plan.df.escape;
        let expand = |w: &str| {
            strata_frontend::expand_word(w, lookup, escape)
                .map_err(|e| self.fail(ins, &e.to_string()))
        };
        let mut words: Vec<String> = match &ins.args {
            Args::Exec(v) => v.iter().map(|w| expand(w)).collect::<Result<_>>()?,
            Args::Shell(s) => strata_frontend::split_words(s, lookup, escape)
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
        let dest_word = words.pop().ok_or_else(|| other("no arguments"))?;
        let workdir = state
            .config
            .config
            .working_dir
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/".into());
        // `dir/`, `.`, `dir/.` and an empty word (the workdir, as BuildKit
        // reads `COPY f $empty`) name a directory.
        let dest_is_dir_syntax = dest_word.is_empty()
            || dest_word.ends_with('/')
            || dest_word == "."
            || dest_word.ends_with("/.");
        let dest_abs = if dest_word.starts_with('/') {
            dest_word.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), dest_word)
        };
        let dest_rel = clean_abs(Path::new(&dest_abs))
            .trim_start_matches('/')
            .to_owned();
        let from = ins.flag("from").map(expand).transpose()?;
        // `--exclude=PATTERN` (repeatable), matched like .dockerignore lines;
        // BuildKit matches them against paths inside each source (a
        // directory's contents, or a file's name).
        let excludes: Vec<String> = ins
            .flag_all("exclude")
            .into_iter()
            .map(expand)
            .collect::<Result<_>>()?;
        let exclude = if excludes.is_empty() {
            None
        } else {
            Some(context::Ignore::parse(&excludes.join("\n"))?)
        };
        let parents = ins.bool_flag("parents").map_err(|e| self.fail(ins, &e))?;
        let link = ins.bool_flag("link").map_err(|e| self.fail(ins, &e))?;
        Ok(CopyRequest {
            is_add,
            source_words: words,
            dest_word,
            dest_abs,
            dest_rel,
            dest_is_dir_syntax,
            from,
            excludes,
            exclude,
            parents,
            chown: ins.flag("chown").map(expand).transpose()?,
            // Expanded as --chown is (`COPY --chmod=${mode}`), as BuildKit does.
            chmod: ins
                .flag("chmod")
                .map(expand)
                .transpose()?
                .filter(|m| !m.is_empty()),
            link,
        })
    }

    /// The sources the instruction names, in order: heredocs as inline
    /// files, then paths and patterns in the context or in `tree` (`--from`).
    fn copy_sources(
        &self,
        ins: &Instruction,
        req: &CopyRequest,
        tree: Option<&MergedTree>,
        lookup: &dyn Fn(&str) -> Option<String>,
        inline_dir: &Path,
    ) -> Result<Vec<Source>> {
        let mut sources: Vec<Source> = Vec::new();
        for w in &req.source_words {
            if let Some(name) = w.strip_prefix("<<") {
                sources.push(self.inline_source(ins, name, lookup, inline_dir)?);
                continue;
            }
            if req.is_add
                && (w.starts_with("http://") || w.starts_with("https://") || w.starts_with("git@"))
            {
                return Err(self.fail(ins, &format!("ADD {w}: remote sources are not supported by this version of strata; download the file into the context and COPY it")));
            }
            let rel = clean_abs(Path::new(&format!("/{w}")))
                .trim_start_matches('/')
                .to_owned();
            let mut matched = match tree {
                Some(t) => stage_tree::select_in_tree(t, &rel)?,
                None => self.select(&self.opts.context, &rel, Some(&self.context_files.ignore))?,
            };
            if let Some(ex) = &req.exclude {
                matched.retain(|m| {
                    let is_dir = match tree {
                        Some(t) => tree_is_dir(t, &m.path.to_string_lossy()),
                        None => m.path.is_dir(),
                    };
                    is_dir
                        || !m
                            .path
                            .file_name()
                            .is_some_and(|n| ex.excluded(&n.to_string_lossy()))
                });
            }
            if req.parents {
                keep_parents(w, &mut matched);
            }
            // A wildcard may match nothing (BuildKit's `AllowEmptyWildcard`);
            // a plain path must exist.
            if matched.is_empty() && !rel.contains(['*', '?', '[']) {
                return Err(self.fail(
                    ins,
                    &format!("failed to compute cache key: \"/{rel}\" not found"),
                ));
            }
            sources.extend(matched);
        }
        if (sources.len() > 1 || req.parents) && !req.dest_is_dir_syntax {
            return Err(self.fail(ins, &format!("When using {} with more than one source file, the destination must be a directory and end with a /", ins.keyword.to_uppercase())));
        }
        Ok(sources)
    }

    /// A heredoc source (`<<EOF`) written to a file in `inline_dir`.
    fn inline_source(
        &self,
        ins: &Instruction,
        marker: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        inline_dir: &Path,
    ) -> Result<Source> {
        let name = marker
            .trim_start_matches('-')
            .trim_matches(|c| c == '"' || c == '\'');
        let h = ins
            .heredocs
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| self.fail(ins, &format!("no heredoc named {name}")))?;
        fs::create_dir_all(inline_dir).map_err(io("creating a scratch dir"))?;
        let content = if h.quoted {
            h.content.clone()
        } else {
            strata_frontend::expand_word(&quotes_as_text(&h.content), lookup, '\\')
                .unwrap_or_else(|_| h.content.clone())
        };
        let p = inline_dir.join(name);
        fs::write(&p, content).map_err(io("writing an inline file"))?;
        // BuildKit makes inline files 0644 (`llb.Mkfile(f, 0644, ..)`
        // since moby/buildkit#3992), whatever the umask; COPY keeps
        // that unless --chmod is given.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
            .map_err(io("chmod of an inline file"))?;
        Ok(Source {
            path: p,
            rel: String::new(),
            keep: String::new(),
        })
    }

    /// The step's cache key: parent (none with `--link`), instruction,
    /// flags, destination, and the sources' contents; and its identity
    /// across builds, the same without the contents.
    fn copy_key(
        &self,
        req: &CopyRequest,
        state: &State,
        sources: &[Source],
        tree: Option<&MergedTree>,
    ) -> Result<(String, String)> {
        let started = std::time::Instant::now();
        let hashed_before = self.context_files.hash_cache.fresh_count();
        let mut h = blake3::Hasher::new();
        for s in sources {
            h.update(s.rel.as_bytes());
            match tree.filter(|_| s.in_tree()) {
                Some(t) => {
                    let ex = if tree_is_dir(t, &s.path.to_string_lossy()) {
                        req.exclude.as_ref()
                    } else {
                        None
                    };
                    hash_tree_at(t, &s.path.to_string_lossy(), ex, &mut h)?;
                }
                None => {
                    // Inline files (heredocs) are not context files: their
                    // hashes are not worth remembering across builds.
                    let in_context = req.from.is_none() && s.path.starts_with(&self.opts.context);
                    let ignore = req.from.is_none().then_some(&self.context_files.ignore);
                    let cache = in_context.then_some(&self.context_files.hash_cache);
                    let ex = if s.path.is_dir() {
                        req.exclude.as_ref()
                    } else {
                        None
                    };
                    context::hash_tree(&s.path, &s.rel, ignore, ex, cache, &mut h)?;
                }
            }
        }
        let hashed = self
            .context_files
            .hash_cache
            .fresh_count()
            .saturating_sub(hashed_before);
        if hashed > 0 {
            self.emit_internal(InternalWork::HashingContext { files: hashed }, started);
        }
        let flags = format!(
            "{:?} {:?} {:?} {} {:?} {}",
            req.chown, req.chmod, req.from, req.link, req.excludes, req.parents
        );
        // The step across builds, whatever its sources hold (`reuse`).
        let identity = reuse::step_identity(&state.key, &flags, &req.dest_abs, &req.source_words);
        let parent_key = if req.layer_without_image() {
            ""
        } else {
            state.key.as_str()
        };
        let key = key_of(&[
            parent_key.as_bytes(),
            req.keyword().to_lowercase().as_bytes(),
            flags.as_bytes(),
            req.dest_abs.as_bytes(),
            req.source_words.join("\0").as_bytes(),
            h.finalize().as_bytes(),
        ]);
        let key = if req.layer_without_image() {
            key_of(&[state.key.as_bytes(), key.as_bytes()])
        } else {
            key
        };
        Ok((key, identity))
    }

    /// Builds the step's layer directory: each source copied to where the
    /// destination rules put it, missing parents created (owned as
    /// `--chown` says), `--chmod` and owners applied.
    fn copy_into_layer(
        &self,
        ins: &Instruction,
        req: &CopyRequest,
        state: &State,
        input: &CopyInput<'_>,
        layer_root: &Path,
    ) -> Result<()> {
        let CopyInput {
            sources,
            layered,
            files,
        } = *input;
        let (uid, gid) = match &req.chown {
            Some(c) => self.resolve_chown(c, state, ins)?,
            None => (0, 0),
        };
        let chmod = match &req.chmod {
            Some(m) => {
                Some(Chmod::parse(m).map_err(|e| self.fail(ins, &format!("--chmod={m}: {e}")))?)
            }
            None => None,
        };
        let lowers = if req.layer_without_image() {
            Vec::new()
        } else {
            self.lowers(&state.layers)?
        };
        // Symlinks in the image on the way to the destination are followed,
        // within the root (BuildKit resolves the destination in the image).
        let dest_rel = resolve_in_image(&lowers, &req.dest_rel)
            .map_err(|e| self.fail(ins, &format!("destination {}: {e}", req.dest_abs)))?;
        let dest_is_dir = req.dest_is_dir_syntax
            || strata_exec::snapshot::lookup(&lowers, Path::new(&dest_rel))
                .is_some_and(|f| f.meta.is_dir());
        let keep_owner = req.from.is_some() && req.chown.is_none();
        let place = Placement {
            layer_root,
            dest_rel: &dest_rel,
            dest_is_dir: dest_is_dir || sources.len() > 1,
            lowers: &lowers,
            created_owner: req.chown.as_ref().map(|_| (uid, gid)),
            rules: TreeRules {
                ignore: req.from.is_none().then_some(&self.context_files.ignore),
                exclude: req.exclude.as_ref(),
                owner: if keep_owner { None } else { Some((uid, gid)) },
                chmod: chmod.as_ref(),
                files,
                source: None,
            },
        };
        for s in sources {
            let place = Placement {
                rules: TreeRules {
                    source: layered.filter(|_| s.in_tree()),
                    ..place.rules
                },
                ..place
            };
            self.place_source(ins, req, &place, s)?;
        }
        Ok(())
    }

    /// Copies one source into the layer directory.
    fn place_source(
        &self,
        ins: &Instruction,
        req: &CopyRequest,
        place: &Placement<'_>,
        s: &Source,
    ) -> Result<()> {
        let meta = match place.rules.source {
            Some(layers) => layers.find(&s.path)?.meta,
            None => fs::symlink_metadata(&s.path)
                .map_err(io(format!("reading {}", s.path.display())))?,
        };
        let dest_rel = place.dest_rel;
        let dest_path = place.layer_root.join(dest_rel);
        let parents_of = |target_rel: &str| {
            Path::new(target_rel)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        // The directories above what is copied: made as the image would
        // have them (existing ones' metadata kept, new ones as `--chmod`
        // says, see `created_dir_mode`).
        let make_dirs_with = |rel: &str, mode: u32| {
            self.make_parents_owned(
                place.layer_root,
                rel,
                place.lowers,
                true,
                place.created_owner,
                mode,
            )
        };
        let make_dirs = |rel: &str| make_dirs_with(rel, chmod::created_dir_mode(place.rules.chmod));
        if req.parents && !s.keep.is_empty() {
            let target_rel = format!("{dest_rel}/{}", s.keep)
                .trim_start_matches('/')
                .to_owned();
            make_dirs(&parents_of(&target_rel))?;
            return copy_tree(
                &s.path,
                &place.layer_root.join(&target_rel),
                &s.rel,
                "",
                place.rules,
                false,
            );
        }
        if meta.is_dir() {
            make_dirs(dest_rel)?;
            copy_tree(&s.path, &dest_path, &s.rel, "", place.rules, true)?;
            // The destination takes the source directory's mtime, made or
            // already there, but keeps its own mode and owner (fsutil's
            // copy with CopyDirContentsOnly restores the "timestamp" of a
            // directory it did not create from the source's stat).
            return tree::set_mtime(&dest_path, meta.mtime());
        }
        if req.is_add && !meta.file_type().is_symlink() && is_archive(&s.path) {
            // BuildKit's unpack makes the destination 0755 whatever
            // `--chmod` says (which it does not apply to archives either).
            make_dirs_with(dest_rel, 0o755)?;
            let f = fs::File::open(&s.path).map_err(io(format!("opening {}", s.path.display())))?;
            let (_, r) = strata_oci::compress::decompress(f)
                .map_err(io(format!("reading {}", s.path.display())))?;
            strata_oci::apply::apply_layer(r, &dest_path, &mut strata_oci::apply::DeleteWhiteouts)
                .map_err(|e| {
                    self.fail(
                        ins,
                        &format!("extracting {}: {}", s.rel, crate::error::chain(&e)),
                    )
                })?;
            // `--chown` owns everything the archive held, as Docker's untar
            // does with ChownOpts (BuildKit's unpack).
            if let Some((uid, gid)) = place.created_owner {
                chown::chown_extracted(&dest_path, uid, gid)?;
            }
            return Ok(());
        }
        // The name the source was given (a symlink's, not its target's:
        // `COPY foo /` with foo -> bar makes /foo); an inline file's own.
        let name = s
            .rel
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .map(std::ffi::OsString::from)
            .or_else(|| s.path.file_name().map(|n| n.to_owned()))
            .unwrap_or_default();
        let target_rel = if place.dest_is_dir {
            format!("{dest_rel}/{}", name.to_string_lossy())
        } else {
            dest_rel.to_owned()
        };
        let target_rel = target_rel.trim_start_matches('/').to_owned();
        make_dirs(&parents_of(&target_rel))?;
        copy_tree(
            &s.path,
            &place.layer_root.join(&target_rel),
            "",
            "",
            TreeRules {
                ignore: None,
                exclude: None,
                ..place.rules
            },
            false,
        )
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
        owners::begin();
        self.make_parents_owned(&layer_root, &rel, &lowers, true, Some(owner), 0o755)?;
        owners::apply_pending(&layer_root)?;
        let changes = strata_oci::layer::changes_for_tree(&layer_root)
            .map_err(context("listing the layer"))?;
        let layer = self.write_layer(&layer_root, &changes)?;
        self.adopt_snapshot(&layer, &layer_root)?;
        Ok(Some(layer))
    }
}

/// A named context directory's files copied into `layer_root` as its layer
/// holds them: its `.dockerignore` applied, every entry owned by root (as
/// BuildKit's local sources are: buildx sends them with uid and gid 0).
pub(crate) fn copy_named_dir(
    dir: &Path,
    layer_root: &Path,
    ignore: &context::Ignore,
) -> Result<()> {
    owners::begin();
    let rules = TreeRules {
        ignore: Some(ignore),
        exclude: None,
        owner: Some((0, 0)),
        chmod: None,
        files: &reuse::FileCopies::counting(),
        source: None,
    };
    copy_tree(dir, layer_root, "", "", rules, true)?;
    owners::apply_pending(layer_root)
}

/// Where sources land in the layer directory, and how.
/// What a COPY that runs copies: its sources, where those in another
/// stage are read from, and the files it may link instead of copying.
#[derive(Clone, Copy)]
struct CopyInput<'a> {
    sources: &'a [Source],
    layered: Option<&'a LayeredSource>,
    files: &'a reuse::FileCopies<'a>,
}

#[derive(Clone, Copy)]
struct Placement<'a> {
    layer_root: &'a Path,
    /// The destination, symlinks in the image resolved.
    dest_rel: &'a str,
    /// A file source goes inside the destination rather than becoming it.
    dest_is_dir: bool,
    lowers: &'a [PathBuf],
    /// Owner of directories the copy creates (`--chown`), else root.
    created_owner: Option<(u32, u32)>,
    rules: TreeRules<'a>,
}

/// `--parents` keeps each source's path, from the `/./` pivot when the
/// source names one (`src/./pkg/x` keeps `pkg/x`).
fn keep_parents(word: &str, matched: &mut [Source]) {
    let pivot = word
        .find("/./")
        .map(|i| clean_abs(Path::new(&format!("/{}", &word[..i]))))
        .map(|p| p.trim_start_matches('/').to_owned());
    for m in matched {
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
