//! The executor: runs a process in fresh Linux namespaces on an overlayfs
//! snapshot (rootful or rootless through a user namespace) and turns what it
//! changed into layer changes.
//!
//! This is the only crate with `unsafe` and raw syscalls; each `unsafe` block
//! carries a `// SAFETY:` comment. Nothing mounted or spawned here outlives the
//! step that created it, on any path.
