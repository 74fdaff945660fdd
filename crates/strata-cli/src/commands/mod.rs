//! One module per group of subcommands; each owns its clap arguments and
//! rendering.

mod attest_flags;
pub mod bake;
pub mod build;
mod build_context;
mod build_flags;
mod build_pushed;
mod cgroup_parent_flag;
mod check;
pub mod container;
pub mod debug;
pub mod image;
mod named_contexts;
mod per_item;
pub mod registry;
mod ship;
mod store;
pub mod system;
