//! API errors as `{ "error": "..." }` with a 4xx/5xx status, and a JSON body extractor whose
//! rejections use the same shape.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
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
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the field or object.
    pub message: String,
    /// The HTTP status.
    pub code: u16,
    /// The same as `message`.
    pub error: String,
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
                error: self.message.clone(),
                code: self.status.as_u16(),
                message: self.message,
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

/// A JSON object body (`application/json`, as [`super::guard::is_json`] says) as `T`. Refusals are [`ApiError`]s:
/// 415 without a JSON content type, 413 beyond the body limit, 400 for anything but one JSON
/// object (serde would take an array as a struct's fields in order), bad JSON, wrong types or
/// unknown fields.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ctype = req.headers().get(header::CONTENT_TYPE);
        if !ctype
            .and_then(|v| v.to_str().ok())
            .is_some_and(super::guard::is_json)
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid request body: expected `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = match rej.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, format!("invalid request body: {}", rej.body_text()))
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid request body: expected a JSON object",
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rej) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {}", rej.body_text()),
            )),
        }
    }
}

/// Query parameters as `T`, refused as a 400 [`ApiError`] naming the parameter (axum's own
/// `Query` answers in plain text).
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(QueryParams(v)),
            Err(rej) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid query: {}", rej.body_text()),
            )),
        }
    }
}
