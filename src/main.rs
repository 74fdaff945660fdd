//! The `strata` binary: argument handling and rendering live in `strata-cli`.

fn main() -> std::process::ExitCode {
    strata_cli::main()
}
