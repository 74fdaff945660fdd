//! The step helper as a standalone binary, for this crate's tests (libtest
//! owns their `main`). The `strata` binary re-executes itself instead.

fn main() {
    strata_exec::maybe_run_helper();
    std::process::exit(2);
}
