//! How a process is watched: its log format, and where its Prometheus metrics are served.
//! Both binaries read the same three variables.

use clap::ValueEnum;

/// The log lines' shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people reading a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `LOG_FORMAT`, `METRICS_PORT` and `METRICS_TOKEN`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observe {
    /// `LOG_FORMAT`: text or JSON lines.
    pub log_format: LogFormat,
    /// `METRICS_PORT`: serve `/metrics` on this port of its own. The server otherwise
    /// serves it on its public router; the worker serves none without it.
    pub metrics_port: Option<u16>,
    /// `METRICS_TOKEN`: `/metrics` then asks for `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
}

/// The flags and variables behind [`Observe`].
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ObserveArgs {
    /// How log lines look: text for people, json for log shippers (one object per line).
    /// RUST_LOG sets the level (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics (/metrics) on this port, apart from the API. The server
    /// serves them on its API port without it; the worker serves none without it.
    #[arg(long, env = "METRICS_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    metrics_port: Option<u16>,
    /// Ask scrapers for this token (Authorization: Bearer) on /metrics. Unset: open.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

impl ObserveArgs {
    pub(crate) fn resolve(&self) -> Observe {
        Observe {
            log_format: self.log_format,
            metrics_port: self.metrics_port,
            // Blank, as in a .env template, is unset.
            metrics_token: self
                .metrics_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        }
    }
}
