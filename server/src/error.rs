//! The API's one error type: every failure becomes a status and a JSON body naming it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use beacon_protocol::{ErrorBody, ValidationError};
use beacon_store::StoreError;

/// Longest a request waits on the store before answering 503. MongoDB's own server
/// selection gives up after a second; this also covers a server that accepts and hangs.
pub const STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a store call under [`STORE_TIMEOUT`]; failures and timeouts are logged and become
/// [`ApiError::Unavailable`].
pub async fn with_timeout<T>(
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(STORE_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::error!(
                timeout_ms = STORE_TIMEOUT.as_millis() as u64,
                "store call timed out"
            );
            Err(ApiError::Unavailable)
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The event (or batch) is malformed or breaks a limit.
    #[error("{0}")]
    InvalidEvent(#[from] ValidationError),
    /// The query string is malformed.
    #[error("{0}")]
    InvalidQuery(String),
    /// axum refused the request before the handler ran (body too large, bad encoding…).
    #[error("{message}")]
    Rejected {
        /// The status axum chose.
        status: StatusCode,
        /// axum's explanation.
        message: String,
    },
    /// The store is down or too slow; the client should retry.
    #[error("the event store is unavailable, retry later")]
    Unavailable,
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// A browser SDK file that is not built (or not in `SDK_DIR`).
    #[error(
        "{0} is not here: build the browser SDK with scripts/build-wasm, or point SDK_DIR at its files"
    )]
    SdkFileMissing(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidEvent(_) => (StatusCode::BAD_REQUEST, "invalid_event"),
            Self::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::Rejected { status, .. } => match *status {
                StatusCode::PAYLOAD_TOO_LARGE => (*status, "payload_too_large"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE => (*status, "unsupported_media_type"),
                s if s.is_client_error() => (s, "bad_request"),
                // A body that fails to arrive is still the client's problem, never a 500.
                _ => (StatusCode::BAD_REQUEST, "bad_request"),
            },
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::NotFound(_) | Self::SdkFileMissing(_) => (StatusCode::NOT_FOUND, "not_found"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, unavailable = e.is_unavailable(), "store call failed");
        Self::Unavailable
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        Self::Rejected {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        Self::InvalidQuery(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code.to_owned(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
