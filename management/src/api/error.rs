//! API errors as `{ "error": "..." }` with a 4xx/5xx status, and a JSON body extractor whose
//! rejections use the same shape.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::ModelError;
use crate::service::ServiceError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

/// The JSON shape of every error: NetBird's `message` and `code`, and `error` (the same
/// message, the name this API used first).
#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    code: u16,
    error: &'a str,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 500 without internals (they are logged).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; nothing was changed (see the server log)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                message: &self.message,
                code: self.status.as_u16(),
                error: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let status = match &e {
            ModelError::Invalid(_) => StatusCode::BAD_REQUEST,
            ModelError::NotFound { .. } => StatusCode::NOT_FOUND,
            ModelError::Conflict(_) => StatusCode::CONFLICT,
            ModelError::SetupKeyRejected(_) | ModelError::PeerNotAllowed(_) => {
                StatusCode::FORBIDDEN
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Model(m) => m.into(),
            ServiceError::Store(s) => {
                tracing::error!(error = %s, "store error");
                ApiError::internal()
            }
            ServiceError::Forbidden(s) => ApiError::new(StatusCode::FORBIDDEN, s),
        }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// `Json<T>` whose rejections (bad JSON, wrong types, unknown fields, missing content type)
/// are 400 `{ "error": ... }`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rej) => {
                let status = match &rej {
                    JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(ApiError::new(
                    status,
                    format!("invalid request body: {}", rej.body_text()),
                ))
            }
        }
    }
}
