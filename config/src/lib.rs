//! Beacon's settings, in one place for both binaries: what each one reads, its
//! environment variable, its default and its help text, declared once with `clap`, so
//! that `--help` lists exactly what is read.
//!
//! - [`ServerConfig`] is `beacon-server`'s; it holds a [`WorkerConfig`] for the worker it
//!   may run inside.
//! - [`WorkerConfig`] is `beacon-worker`'s: the polling settings and the store's.
//! - `store` reads the store's variables into a [`beacon_store::StoreConfig`].
//! - [`Observe`]: the log format and where metrics are served, for both.
//! - [`process`] sets up logging and waits for shutdown signals.
//!
//! Every value comes from a command-line flag, else the environment, else `.env`, else
//! its default, and is checked at start-up: a bad one stops the process with the
//! variable's name rather than surfacing later as a confusing failure.
//!
//! Why a crate of its own rather than the store owning its settings: both binaries need
//! the same reader, the worker's settings and the store's, and a library such as the
//! store should not depend on a command-line parser.

mod limits;
mod observe;
pub mod process;
mod server;
mod store;
mod worker;

pub use limits::{Limits, RateLimit};
pub use observe::{LogFormat, Observe};
pub use server::ServerConfig;
pub use store::StoreArgs;
pub use worker::WorkerConfig;

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `.env` exists but cannot be read.
    #[error("cannot read .env: {0}")]
    DotEnv(#[from] dotenvy::Error),
    /// A flag or variable is unusable (the message names it), or `--help` or
    /// `--version` was asked for.
    #[error(transparent)]
    Invalid(#[from] clap::Error),
}

impl ConfigError {
    /// Prints the error (or the help or version asked for) and exits with clap's code.
    pub fn exit(self) -> ! {
        match self {
            Self::Invalid(e) => e.exit(),
            Self::DotEnv(e) => {
                eprintln!("error: cannot read .env: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// A binary's command line, turned into its settings.
trait Args: clap::Parser {
    /// The settings.
    type Config;
    /// The program's name, for parsing without a command line.
    const NAME: &'static str;

    /// Checks what clap cannot and works out defaults that depend on other settings.
    fn resolve(&self) -> Result<Self::Config, clap::Error>;

    /// Reads `.env` (if there is one) into the environment, then the environment and
    /// the command line. Variables already set win over `.env`.
    fn load() -> Result<Self::Config, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Self::try_parse()?.resolve()?)
    }

    /// Reads `args` (without the program name) alone, ignoring the environment.
    fn without_env(args: &[&str]) -> Result<Self::Config, clap::Error> {
        let command = Self::command().mut_args(|a| a.env(None));
        let mut all = vec![Self::NAME];
        all.extend_from_slice(args);
        Self::from_arg_matches(&command.try_get_matches_from(all)?)?.resolve()
    }

    /// Every setting at its default, whatever the environment says.
    fn defaults() -> Self::Config {
        Self::without_env(&[]).unwrap_or_else(|e| unreachable!("the defaults parse: {e}"))
    }
}
