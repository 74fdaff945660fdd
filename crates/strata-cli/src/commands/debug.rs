//! `strata debug`: internals for developers and for checking strata against
//! the reference.

use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's AST in the reference parser's dump format
    DumpAst {
        /// The Dockerfile (`-` for stdin)
        file: std::path::PathBuf,
    },
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::DumpAst { file } => {
            let (name, src) = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                ("-".to_owned(), s)
            } else {
                let s = fs_err::read_to_string(&file)?;
                (file.display().to_string(), s)
            };
            match strata_frontend::parse_ast(&src, &name) {
                Ok((_, nodes)) => {
                    std::io::stdout()
                        .lock()
                        .write_all(strata_frontend::dump(&nodes).as_bytes())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(d) => {
                    #[expect(clippy::print_stderr, reason = "the CLI renders diagnostics")]
                    {
                        eprintln!("error: {}", d.render());
                    }
                    Ok(ExitCode::from(crate::exit::EXIT_FAILURE))
                }
            }
        }
    }
}
