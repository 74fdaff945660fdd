//! The Dockerfile frontend: turns a Dockerfile (and its `.dockerignore`) into a
//! typed build graph exactly as BuildKit's current Dockerfile frontend reads it.
//!
//! Owns: parser directives, the line/continuation/heredoc grammar, instruction
//! flags, shell-word expansion, ARG/ENV scoping, the stage graph and ignore
//! rules. It never touches the filesystem beyond reading what it is handed, never
//! prints, and never panics on any input: every problem is an error with a span.
