//! The client's one error type: what building a client or reading stats can fail with.

use reqwest::StatusCode;

/// Why building the client or a stats query failed. `track()` itself never fails.
///
/// ```no_run
/// # async fn demo(client: beacon::Client) {
/// match client.stats(&beacon::StatsQuery::new("site-001")).await {
///     Ok(stats) => println!("{} events", stats.total_events),
///     Err(beacon::Error::Api { status, message, .. }) => eprintln!("{status}: {message}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The builder's settings cannot work.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The server could not be reached, or its answer could not be read.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error.
    #[error("server answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The server's error code, such as `invalid_query`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The query could not be encoded.
    #[error("cannot encode the query: {0}")]
    Encode(#[from] serde_urlencoded::ser::Error),
}
