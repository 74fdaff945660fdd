//! The build's error type and the helpers that make one; a leaf every
//! module uses.

/// Everything wrong with a build, each naming what the user must fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", .0.render())]
    Dockerfile(Box<strata_frontend::Diagnostic>),
    #[error(
        "process \"{command}\" did not complete successfully: exit code: {code}\n  at {file}:{line}: {instruction}"
    )]
    StepFailed {
        file: String,
        line: usize,
        instruction: String,
        command: String,
        code: i32,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An I/O error from `fs_err`, whose message names the path.
    #[error(transparent)]
    Fs(#[from] std::io::Error),
    #[error("{what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    // The lower crates' errors are boxed: they are large, and a build error
    // is moved through every `?` of the solver.
    #[error(transparent)]
    Store(Box<strata_store::StoreError>),
    #[error(transparent)]
    Exec(Box<strata_exec::ExecError>),
    #[error(transparent)]
    Image(Box<strata_image::ImageError>),
    #[error(transparent)]
    Registry(Box<strata_registry::RegistryError>),
    /// What a lower layer reported (an OCI document, a layer, a path, an
    /// archive), with what the build was doing; the cause stays a source.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("{0}")]
    Other(String),
    /// Another stage failed first; this one stopped.
    #[error("cancelled because another stage failed")]
    Cancelled,
}

pub(crate) type Result<T, E = BuildError> = std::result::Result<T, E>;

pub(crate) fn other(msg: impl Into<String>) -> BuildError {
    BuildError::Other(msg.into())
}

/// An error and its causes as one line (`a: b: c`), for messages that carry
/// an error as text (progress events, Dockerfile diagnostics). A cause whose
/// text the line already ends with (an error that also prints its source)
/// is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// For `map_err`: keeps `source` as the cause of an error that says what
/// the build was doing.
pub(crate) fn context<E>(context: impl Into<String>) -> impl FnOnce(E) -> BuildError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let context = context.into();
    move |source| BuildError::Context {
        context,
        source: Box::new(source),
    }
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

macro_rules! boxed_from {
    ($($variant:ident($error:ty)),* $(,)?) => {
        $(impl From<$error> for BuildError {
            fn from(e: $error) -> Self {
                BuildError::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Store(strata_store::StoreError),
    Exec(strata_exec::ExecError),
    Image(strata_image::ImageError),
    Registry(strata_registry::RegistryError),
);
