//! The API's one error type and its mapping to status codes and JSON bodies.

use super::types::{ErrorBody, ErrorDetail};
use crate::batch::BatchError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Timeout(String),
    #[error("the server is at capacity; retry shortly")]
    Overloaded,
    #[error("the request's deadline passed before it was served")]
    Deadline,
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("reload refused, the previous state keeps serving: {0}")]
    ReloadFailed(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Deadline => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ReloadFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::Timeout(_) => "request_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Deadline => "deadline_exceeded",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::ReloadFailed(_) => "reload_failed",
        }
    }

    /// The response, with the request id in the body.
    pub fn into_response_with_id(self, request_id: &str) -> Response {
        let status = self.status();
        let retry = matches!(self, ApiError::Overloaded | ApiError::Deadline);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                request_id: request_id.to_string(),
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Overloaded => ApiError::Overloaded,
            BatchError::DeadlineExceeded => ApiError::Deadline,
            BatchError::Model(m) => ApiError::Internal(m),
            BatchError::Closed => ApiError::Unavailable("the model thread stopped".into()),
        }
    }
}

tokio::task_local! {
    /// The id of the request being served (set by the request middleware).
    pub static REQUEST_ID: String;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = REQUEST_ID
            .try_with(|id| id.clone())
            .unwrap_or_else(|_| "-".to_string());
        self.into_response_with_id(&id)
    }
}
