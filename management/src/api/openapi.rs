//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` and the
//! request and answer types' `ToSchema` derives. [`super::router`] registers every route
//! through `utoipa_axum`, so a route cannot exist without its entry here; the document is
//! served at [`OPENAPI_PATH`].

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::error::ErrorBody;

/// Where the document is served (a token of any role reads it).
pub const OPENAPI_PATH: &str = "/api/openapi.json";

/// The document's header, security schemes and shared schemas; the paths come from the
/// router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "swiftgate-management admin API",
        description = "NetBird-compatible REST API of swiftgate's management server. Every \
                       request carries a personal access token (`Authorization: Token <PAT>` \
                       or `Bearer <PAT>`); changes need JSON bodies and a same-origin request.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&TokenAuth),
    security(("TokenAuth" = []), ("BearerAuth" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "health", description = "Liveness and the account's serial."),
        (name = "peers", description = "Devices running the agent."),
        (name = "groups", description = "Named sets of peers and resources."),
        (name = "settings", description = "Account settings (swiftgate's form)."),
        (name = "accounts", description = "Account settings (NetBird's form)."),
        (name = "networks", description = "Networks, their resources and routing peers."),
        (name = "policies", description = "Access policies."),
        (name = "setup-keys", description = "Keys that register headless peers."),
        (name = "posture-checks", description = "Conditions source peers must meet."),
        (name = "users", description = "Users and their roles."),
        (name = "tokens", description = "Personal access tokens."),
        (name = "routes", description = "NetBird's older network routes, exit nodes included."),
        (name = "dns", description = "Name server groups and DNS settings."),
        (name = "events", description = "The activity log."),
    )
)]
pub struct ApiDoc;

/// Adds the two ways a token is presented: NetBird's `Token <PAT>` and `Bearer <PAT>`.
struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "TokenAuth",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <personal access token>`",
            ))),
        );
        c.add_security_scheme(
            "BearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Bearer <personal access token>`"))
                    .build(),
            ),
        );
    }
}

/// The refusals every operation may answer, all as [`ErrorBody`].
#[derive(IntoResponses)]
#[allow(dead_code)] // a description of answers, never built
pub enum Refusals {
    /// The request names something wrong (a field, a value, an object); nothing changed.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or one that is unknown, expired or revoked (with `WWW-Authenticate`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token's role may not do this, or the request came from another site.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such object or endpoint.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The request took too long to arrive.
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The change conflicts with another object (a name taken, an object still in use).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is larger than 1 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A change without a JSON body.
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// The `Host` header names a server this one is not configured as.
    #[response(status = 421)]
    WrongHost(ErrorBody),
    /// The server failed; nothing was changed (see its log).
    #[response(status = 500)]
    Internal(ErrorBody),
}
