//! The library's error at the edge: everything a command can fail with,
//! and the exit code it maps to (0 success, 2 usage or configuration, 1
//! anything else), so the binary needs no knowledge of the modules' own
//! error types.

use crate::admin::AdminError;
use crate::check::OwnCheckError;
use crate::config::ConfigError;
use crate::history::HistoryError;
use crate::history::export::ExportError;
use crate::lists::ListsError;
use crate::reputation::hiya_cache::build::BuildError;
use crate::reputation::hiya_cache::sync::SyncError;
use crate::server::ServerError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A combination of arguments that cannot work.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    OwnCheck(#[from] OwnCheckError),
    #[error(transparent)]
    Lists(#[from] ListsError),
    #[error("cache for {country} not built; the serving generation is unchanged")]
    CacheBuild {
        country: String,
        #[source]
        source: BuildError,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    OwnStore(#[from] crate::own::StoreError),
    /// A provider's API refused or failed a command's request.
    #[error(transparent)]
    Provider(#[from] crate::reputation::SourceError),
    /// Anything else (I/O on a named file, the runtime), with its context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What kind of failure an [`Error`] is, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The command line or the configuration is wrong: fix it and retry.
    Usage,
    /// Something failed while running.
    Failure,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        let usage = match self {
            Error::Config(_) | Error::Usage(_) => true,
            Error::OwnCheck(e) => {
                matches!(e, OwnCheckError::NotEnabled | OwnCheckError::NotANumber(_))
            }
            Error::CacheBuild { source, .. } => matches!(source, BuildError::Country(_)),
            Error::History(e) | Error::Export(ExportError::History(e)) => {
                matches!(e, HistoryError::Filter { .. })
            }
            Error::Admin(AdminError::NoToken { .. }) => true,
            Error::Lists(ListsError::Invalid { .. }) => true,
            // A next hop that does not resolve is the configuration's fault.
            Error::Server(ServerError::NextHop { .. } | ServerError::Locate(_)) => true,
            // So are TLS files that cannot be used.
            Error::Server(ServerError::Tls(_) | ServerError::TlsListen(_)) => true,
            _ => false,
        };
        if usage {
            ErrorKind::Usage
        } else {
            ErrorKind::Failure
        }
    }

    /// The process exit code: 2 for usage and configuration errors, 1 for
    /// the rest.
    pub fn exit_code(&self) -> u8 {
        match self.kind() {
            ErrorKind::Usage => 2,
            ErrorKind::Failure => 1,
        }
    }

    /// One line: the error and each cause after it, `: `-separated.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let text = c.to_string();
            // A transparent layer repeats its inner error's text.
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = c.source();
        }
        out
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
