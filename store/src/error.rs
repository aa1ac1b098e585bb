//! The store's one error type.

use thiserror::Error;

/// Everything the store can fail with. Callers mostly need [`StoreError::is_unavailable`]:
/// an unavailable store is a 503 and a retry, anything else is a bug or bad data.
#[derive(Debug, Error)]
pub enum StoreError {
    /// MongoDB could not be reached in time.
    #[error("MongoDB is unavailable: {0}")]
    Unavailable(String),
    /// MongoDB answered with an error.
    #[error("MongoDB error: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// SQLite answered with an error.
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created or opened.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration cannot work, for example a malformed `MONGO_URL`.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A stored document does not have the shape Beacon writes.
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// A write was not started before its caller's deadline; nothing of it is stored.
    #[error("the store was too busy to take the events in time")]
    DeadlinePassed,
    /// The blocking task that ran an embedded-store call died.
    #[error("embedded store task failed: {0}")]
    Task(String),
    /// A query that cannot be answered as asked: the message says why, for the asker.
    #[error("{0}")]
    BadQuery(String),
}

impl StoreError {
    /// A short name for the kind of failure, for metrics: `unavailable` when retrying
    /// may succeed, else the part that failed.
    pub fn kind(&self) -> &'static str {
        if self.is_unavailable() {
            return "unavailable";
        }
        match self {
            Self::Unavailable(_) | Self::DeadlinePassed => "unavailable",
            Self::Mongo(_) => "mongo",
            Self::Sqlite(_) => "sqlite",
            Self::DataDir { .. } => "data_dir",
            Self::Config(_) => "config",
            Self::Corrupt(_) => "corrupt",
            Self::Task(_) => "task",
            Self::BadQuery(_) => "bad_query",
        }
    }

    /// Whether retrying later may succeed: the database is down, slow or busy.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::DeadlinePassed => true,
            Self::Mongo(e) => {
                use mongodb::error::ErrorKind;
                matches!(
                    *e.kind,
                    ErrorKind::ServerSelection { .. }
                        | ErrorKind::Io(_)
                        | ErrorKind::ConnectionPoolCleared { .. }
                ) || e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
            }
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }

    /// Whether SQLite refused the data itself, so that retrying the same write can never
    /// succeed: a constraint, a value too big. Such events go to `dead_letters` rather
    /// than blocking the queue. (MongoDB says so per document; see `mongo::moves`.)
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Sqlite(e) if sqlite_refused(e))
    }
}

/// Whether SQLite refused the data itself (see [`StoreError::is_permanent`]).
pub(crate) fn sqlite_refused(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if matches!(
            f.code,
            rusqlite::ErrorCode::ConstraintViolation
                | rusqlite::ErrorCode::TooBig
                | rusqlite::ErrorCode::TypeMismatch
        )
    )
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
