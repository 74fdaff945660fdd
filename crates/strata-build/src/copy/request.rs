//! What a COPY or ADD instruction asks, its words and flags expanded
//! (`CopyRequest`), and the history entry BuildKit writes for it.

use crate::context;

/// A COPY/ADD instruction with its words and flags expanded.
pub(super) struct CopyRequest {
    pub(super) is_add: bool,
    pub(super) source_words: Vec<String>,
    pub(super) dest_word: String,
    /// The destination as written, made absolute against WORKDIR.
    pub(super) dest_abs: String,
    /// `dest_abs` cleaned and relative to the root.
    pub(super) dest_rel: String,
    /// `dir/`, `.` and `dir/.` name a directory; so does an existing
    /// directory in the image (checked once the lowers are known).
    pub(super) dest_is_dir_syntax: bool,
    /// `--from`: a stage (name or index) or an image.
    pub(super) from: Option<String>,
    /// `--exclude` patterns as written (for the key) and as rules.
    pub(super) excludes: Vec<String>,
    pub(super) exclude: Option<context::Ignore>,
    pub(super) parents: bool,
    pub(super) chown: Option<String>,
    /// `--chmod`, expanded; an empty value is no `--chmod` (BuildKit's
    /// `cfg.chmod != ""`).
    pub(super) chmod: Option<String>,
    pub(super) link: bool,
}

impl CopyRequest {
    pub(super) fn keyword(&self) -> &'static str {
        if self.is_add { "ADD" } else { "COPY" }
    }

    /// Whether the layer is made without the image under it. BuildKit
    /// merges a `--link` copy made on scratch onto the image only without
    /// `--chmod` (`cfg.link && cfg.chmod == ""` in dockerfile2llb's
    /// `dispatchCopy`, since `--link` was added); with `--chmod` the copy
    /// is an ordinary one onto the image, which follows the image's
    /// symlinks and leaves its existing directories alone.
    pub(super) fn layer_without_image(&self) -> bool {
        self.link && self.chmod.is_none()
    }
}

/// A COPY/ADD step's `created_by`, as BuildKit's `dispatchCopy` writes it:
/// `--parents`, `--chown` and `--chmod` with their expanded values (never
/// `--from`, `--link` or `--exclude`), the expanded sources with heredocs
/// last as `<<NAME`, the destination, and ` # buildkit`.
pub(super) fn copy_history(req: &CopyRequest) -> String {
    let mut text = req.keyword().to_owned();
    if req.parents {
        text.push_str(" --parents");
    }
    if let Some(c) = req.chown.as_deref().filter(|c| !c.is_empty()) {
        text.push_str(&format!(" --chown={c}"));
    }
    if let Some(m) = &req.chmod {
        text.push_str(&format!(" --chmod={m}"));
    }
    let (heredocs, paths): (Vec<&String>, Vec<&String>) =
        req.source_words.iter().partition(|w| w.starts_with("<<"));
    for p in paths {
        text.push_str(&format!(" {p}"));
    }
    for h in heredocs {
        let name = h[2..]
            .trim_start_matches('-')
            .trim_matches(|c| c == '"' || c == '\'');
        text.push_str(&format!(" <<{name}"));
    }
    format!("{text} {} # buildkit", req.dest_word)
}
