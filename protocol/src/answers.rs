//! The bodies of the simplest answers: an error, and a single event queued.

/// The body of every error answer, so that clients can show or log one field.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `invalid_event` or `payload_too_large`.
    pub error: String,
    /// What was wrong, for a human.
    pub message: String,
}

/// The answer to a single accepted `POST /event`: `{"status":"queued"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Queued {
    /// Always `"queued"`.
    pub status: String,
}

impl Queued {
    /// `{"status":"queued"}`.
    pub fn new() -> Self {
        Self {
            status: "queued".to_owned(),
        }
    }
}

impl Default for Queued {
    fn default() -> Self {
        Self::new()
    }
}
