//! The API's one error type: every failure becomes a status and a JSON body naming it.

use axum::Json;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use beacon_protocol::{ErrorBody, ValidationError};
use beacon_store::StoreError;
use beacon_telemetry::Ingest;

/// Runs a store read under `timeout` (`STORE_TIMEOUT_MS`); failures and timeouts are
/// logged and become [`ApiError::Unavailable`]. Not for writes: cancelling one would
/// leave its outcome unknown, so writes carry a deadline into the store instead.
pub async fn with_timeout<T>(
    timeout: std::time::Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            beacon_telemetry::store_error("timeout");
            tracing::error!(
                timeout_ms = timeout.as_millis() as u64,
                "store call timed out"
            );
            Err(ApiError::Unavailable)
        }
    }
}

/// How long a client should wait when the queue is full: long enough for the worker to
/// drain a good part of it.
const OVERLOADED_RETRY_AFTER_SECS: u64 = 5;

/// The answer to a panic in a handler: the same JSON shape as every other error.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a handler panicked".to_owned());
    tracing::error!(panic = what, "a request handler panicked");
    ApiError::Internal("the server failed while handling this request".to_owned()).into_response()
}

/// The answer to a request the router's timeout (`REQUEST_TIMEOUT_MS`) cut off, or to
/// another failure of a middleware.
pub async fn middleware_error(error: tower::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::RequestTimeout("no answer within REQUEST_TIMEOUT_MS".to_owned())
    } else {
        ApiError::Internal(error.to_string())
    }
}

/// Refuses a body in a `Content-Encoding` that the decompression layer left in place,
/// which is one it cannot decode: tower-http's own refusal is a `415` without a body,
/// and every error here is JSON.
pub async fn refuse_unknown_encoding(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match request.headers().get(header::CONTENT_ENCODING) {
        Some(encoding) if encoding != "identity" => {
            let named = String::from_utf8_lossy(encoding.as_bytes());
            let named: String = named.chars().take(64).collect();
            ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!(
                    "Content-Encoding `{named}` is not supported: send gzip, or no encoding"
                ),
            }
            .into_response()
        }
        _ => next.run(request).await,
    }
}

/// A route's path parameters, refused in the API's error shape: axum's own refusal (of
/// a parameter that is not UTF-8 once decoded, say) is plain text.
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(Self(params)),
            Err(rejection) => Err(ApiError::Invalid(rejection.body_text())),
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
    /// The store is down or too slow; nothing was stored, and the client should retry.
    #[error("the event store is unavailable, retry later")]
    Unavailable,
    /// The queue is above its high-water mark; nothing was stored.
    #[error("the queue is full ({depth} events waiting), retry later")]
    Overloaded {
        /// Events waiting.
        depth: u64,
    },
    /// This client sent more than its rate limit allows.
    #[error("too many requests from this address, retry in {retry_after_secs} s")]
    RateLimited {
        /// When the next request will be let through.
        retry_after_secs: u64,
    },
    /// The request (or its body) took longer than the server waits.
    #[error("the request took too long: {0}")]
    RequestTimeout(String),
    /// A bug: a panic, or a part of the server failing.
    #[error("internal error: {0}")]
    Internal(String),
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists, but not for this method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The route.
        path: String,
    },
    /// No such thing (a site, a key).
    #[error("{0}")]
    Missing(String),
    /// A request to the admin API is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No key, or an unknown one, where a key is needed.
    #[error("{0}")]
    Unauthorized(String),
    /// A key that may not do this, or events a site does not take.
    #[error("{0}")]
    Forbidden(String),
    /// The thing exists already.
    #[error("{0}")]
    Conflict(String),
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
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::NotFound(_) | Self::Missing(_) | Self::SdkFileMissing(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::BadQuery(why) = e {
            return Self::InvalidQuery(why);
        }
        beacon_telemetry::store_error(e.kind());
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

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        Self::Invalid(r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        Self::InvalidQuery(r.body_text())
    }
}

impl ApiError {
    /// How this error counts when it refuses a whole ingest request (once per request:
    /// its events may not even have been read).
    pub fn ingest_outcome(&self) -> Ingest {
        match self {
            Self::Overloaded { .. } => Ingest::OverHighWaterMark,
            Self::RateLimited { .. } => Ingest::RateLimited,
            Self::InvalidEvent(_) | Self::Invalid(_) => Ingest::Rejected("invalid"),
            Self::Rejected { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                Ingest::Rejected("too_large")
            }
            Self::Rejected { .. } => Ingest::Rejected("unreadable"),
            Self::Forbidden(_) => Ingest::Rejected("site_refused"),
            Self::Unavailable => Ingest::Rejected("store_unavailable"),
            Self::RequestTimeout(_) => Ingest::Rejected("timeout"),
            _ => Ingest::Rejected("other"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code.to_owned(),
            message: self.to_string(),
        };
        let retry_after = match &self {
            Self::Unavailable => Some(1),
            Self::Overloaded { .. } => Some(OVERLOADED_RETRY_AFTER_SECS),
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
