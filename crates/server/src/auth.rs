//! Bearer-token authentication and authorization, for both APIs (docs/security.md).
//!
//! Each API authenticates a request once, before its body is read (the Flight service
//! wrapper in `flight::auth`, the HTTP middleware [`http_layer`]), checks the scope of the
//! operation, and hands the request an [`Access`]: the handlers ask it about the feature sets
//! they find in the request (a ticket, a spec, a command). Which operation needs which scope
//! is decided here, in [`Operation::scope`], and nowhere else.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time; neither a token nor an
//! `Authorization` header is ever logged or put in an error message.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, Method};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, Scope, TokenConfig};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::metrics::Api;
use crate::telemetry::Metrics;

/// The shortest token accepted in the configuration: shorter ones can be guessed.
pub(crate) const MIN_TOKEN_LENGTH: usize = 16;

/// What a request does, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Online, history and training data reads.
    ReadData,
    /// Get, list, describe a feature set (its schema, flight info) or a feature service.
    Describe,
    /// DoPut, `POST .../rows`.
    Ingest,
    /// Create, update, delete a feature set; create, delete a feature service.
    Manage,
    /// `/metrics` on the HTTP port: it names every feature set.
    Metrics,
    /// Calls that touch no data (ListActions, an unknown route or action): any valid token.
    Discover,
}

impl Operation {
    /// The scope a token needs for the operation; `None`: any valid token.
    pub(crate) fn scope(self) -> Option<Scope> {
        match self {
            Operation::ReadData | Operation::Describe => Some(Scope::Read),
            Operation::Ingest => Some(Scope::Write),
            Operation::Manage | Operation::Metrics => Some(Scope::Admin),
            Operation::Discover => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Operation::ReadData => "read feature data",
            Operation::Describe => "describe feature sets and services",
            Operation::Ingest => "ingest",
            Operation::Manage => "create, update or delete feature sets and services",
            Operation::Metrics => "read the metrics",
            Operation::Discover => "call the server",
        }
    }

    /// The operation of a Flight call, by gRPC method name; `None` for `Handshake`, which
    /// authenticates itself. `DoAction` needs only a valid token here: its action decides
    /// ([`Operation::of_action`]).
    pub(crate) fn of_flight_method(method: &str) -> Option<Operation> {
        Some(match method {
            "Handshake" => return None,
            "DoGet" | "DoExchange" => Operation::ReadData,
            "ListFlights" | "GetFlightInfo" | "PollFlightInfo" | "GetSchema" => Operation::Describe,
            "DoPut" => Operation::Ingest,
            _ => Operation::Discover,
        })
    }

    /// The operation of a Flight action.
    pub(crate) fn of_action(action: &str) -> Operation {
        match action {
            "get_feature_set"
            | "list_feature_sets"
            | "list_feature_set_versions"
            | "get_feature_service"
            | "list_feature_services" => Operation::Describe,
            "create_feature_set"
            | "update_feature_set"
            | "delete_feature_set"
            | "create_feature_service"
            | "delete_feature_service"
            | "rebuild_online" => Operation::Manage,
            _ => Operation::Discover,
        }
    }

    /// The operation of an HTTP route (axum's matched path); `None` for the open routes.
    pub(crate) fn of_http_route(method: &Method, route: Option<&str>) -> Option<Operation> {
        let Some(route) = route else {
            return Some(Operation::Discover);
        };
        Some(match (method.as_str(), route) {
            // The console's page and scripts: it asks for a token and sends it on its API calls.
            (_, "/health") | ("GET", "/" | "/ui" | "/ui/" | "/ui/{*path}") => return None,
            ("GET", "/metrics") => Operation::Metrics,
            (
                "GET",
                "/v1/feature-sets"
                | "/v1/feature-sets/{name}"
                | "/v1/feature-sets/{name}/versions"
                | "/v1/feature-sets/{name}/freshness"
                | "/v1/feature-services"
                | "/v1/feature-services/{name}"
                | "/v1/server/stats",
            ) => Operation::Describe,
            ("GET", "/v1/feature-sets/{name}/distribution") => Operation::ReadData,
            ("POST", "/v1/feature-sets" | "/v1/feature-services")
            | ("DELETE" | "PUT" | "PATCH", "/v1/feature-sets/{name}")
            | ("DELETE", "/v1/feature-services/{name}")
            | ("POST", "/v1/feature-sets/{name}/online/rebuild") => Operation::Manage,
            ("POST", "/v1/feature-sets/{name}/rows") => Operation::Ingest,
            ("POST", "/v1/online" | "/v1/history" | "/v1/training-data") => Operation::ReadData,
            _ => Operation::Discover,
        })
    }
}

/// Why a request was refused: the `reason` label of `featherstore_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    MissingCredentials,
    MalformedCredentials,
    UnknownToken,
    MissingScope,
    FeatureSet,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingCredentials => "missing_credentials",
            Refusal::MalformedCredentials => "malformed_credentials",
            Refusal::UnknownToken => "unknown_token",
            Refusal::MissingScope => "missing_scope",
            Refusal::FeatureSet => "feature_set",
        }
    }
}

/// One configured token, resolved.
pub(crate) struct Grant {
    pub name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    /// Glob patterns; `None`: every feature set.
    feature_sets: Option<Vec<String>>,
}

impl Grant {
    fn may_touch(&self, set: &str) -> bool {
        self.feature_sets
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| glob_matches(p, set)))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `*` matches any run of characters, `?` one; everything else itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    pi = star_p + 1;
                    ti = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The configured tokens; `None` from [`Authenticator::from_config`] means auth is off.
pub(crate) struct Authenticator {
    grants: Vec<Arc<Grant>>,
}

impl Authenticator {
    /// Resolves every token (reading `token_file`s and `token_env` variables) and checks the
    /// section; `None` when no token is configured. The errors name the token, never its value.
    pub(crate) fn from_config(config: &AuthConfig) -> Result<Option<Arc<Authenticator>>, String> {
        if config.tokens.is_empty() {
            return Ok(None);
        }
        let mut grants: Vec<Arc<Grant>> = Vec::with_capacity(config.tokens.len());
        for (i, token) in config.tokens.iter().enumerate() {
            let fail = |reason: String| format!("auth.tokens[{i}] ({:?}): {reason}", token.name);
            let grant = resolve(token).map_err(fail)?;
            if grants.iter().any(|g| g.name == grant.name) {
                return Err(fail("another token has the same name".into()));
            }
            if grants.iter().any(|g| g.digest == grant.digest) {
                return Err(fail("another token has the same value".into()));
            }
            grants.push(Arc::new(grant));
        }
        Ok(Some(Arc::new(Authenticator { grants })))
    }

    /// The grant of a presented token: every configured digest is compared, in constant
    /// time, whichever matches.
    pub(crate) fn verify(&self, token: &[u8]) -> Option<Arc<Grant>> {
        let presented = digest(token);
        let mut found = None;
        for grant in &self.grants {
            if bool::from(grant.digest.ct_eq(&presented)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// Authenticates the `authorization` value of a request (`Bearer <token>`).
    pub(crate) fn bearer(&self, value: Option<&[u8]>) -> Result<Arc<Grant>, (Refusal, ApiError)> {
        let value = value.ok_or_else(|| {
            (
                Refusal::MissingCredentials,
                ApiError::Unauthenticated(
                    "authentication required: send the header `authorization: Bearer <token>`"
                        .into(),
                ),
            )
        })?;
        let token = strip_scheme(value, b"bearer ").ok_or_else(|| {
            (
                Refusal::MalformedCredentials,
                ApiError::Unauthenticated(
                    "the authorization header must be `Bearer <token>`".into(),
                ),
            )
        })?;
        self.verify(token).ok_or_else(|| {
            (
                Refusal::UnknownToken,
                ApiError::Unauthenticated("the token is not valid".into()),
            )
        })
    }
}

/// The credentials after a case-insensitive scheme (`bearer `, `basic `), trimmed.
pub(crate) fn strip_scheme<'a>(value: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let head = value.get(..scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = value[scheme.len()..].trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

fn resolve(config: &TokenConfig) -> Result<Grant, String> {
    if config.name.trim().is_empty() {
        return Err("the name is empty".into());
    }
    let value = match (&config.token, &config.token_file, &config.token_env) {
        (Some(token), None, None) => token.clone(),
        (None, Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("reading token_file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        (None, None, Some(var)) => std::env::var(var)
            .map_err(|e| format!("token_env {var}: {e}"))?
            .trim()
            .to_string(),
        _ => return Err("give exactly one of token, token_file, token_env".into()),
    };
    if value.len() < MIN_TOKEN_LENGTH {
        return Err(format!(
            "the token is shorter than {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32` makes a good one)"
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token must be printable ASCII without spaces (it is sent in a header)".into(),
        );
    }
    if config.scopes.is_empty() {
        return Err("scopes is empty; give some of read, write, admin".into());
    }
    if let Some(patterns) = &config.feature_sets {
        for pattern in patterns {
            let valid = !pattern.is_empty()
                && pattern
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'*' | b'?'));
            if !valid {
                return Err(format!(
                    "feature_sets pattern {pattern:?} may hold only feature set name characters, `*` and `?`"
                ));
            }
        }
    }
    Ok(Grant {
        name: config.name.clone(),
        digest: digest(value.as_bytes()),
        scopes: config.scopes.clone(),
        feature_sets: config.feature_sets.clone(),
    })
}

/// Who is calling, as the handlers see it: anyone (auth is off) or a token's grant.
#[derive(Clone)]
pub(crate) struct Access {
    grant: Option<Arc<Grant>>,
    metrics: Arc<Metrics>,
    api: Api,
}

impl Access {
    pub(crate) fn new(grant: Option<Arc<Grant>>, metrics: Arc<Metrics>, api: Api) -> Self {
        Access {
            grant,
            metrics,
            api,
        }
    }

    fn refuse(&self, reason: Refusal, message: String) -> ApiError {
        self.metrics
            .auth_failure(self.api.as_str(), reason.as_str());
        ApiError::Forbidden(message)
    }

    /// Refuses an operation the token has no scope for.
    pub(crate) fn require(&self, operation: Operation) -> ApiResult<()> {
        let (Some(grant), Some(scope)) = (&self.grant, operation.scope()) else {
            return Ok(());
        };
        if grant.scopes.contains(&scope) {
            return Ok(());
        }
        Err(self.refuse(
            Refusal::MissingScope,
            format!(
                "token {:?} lacks the {} scope, needed to {}",
                grant.name,
                scope_name(scope),
                operation.describe()
            ),
        ))
    }

    /// Refuses a feature set outside the token's `feature_sets`.
    pub(crate) fn require_set(&self, set: &str) -> ApiResult<()> {
        match &self.grant {
            Some(grant) if !grant.may_touch(set) => Err(self.refuse(
                Refusal::FeatureSet,
                format!("token {:?} may not access feature set {set:?}", grant.name),
            )),
            _ => Ok(()),
        }
    }

    /// Whether listings show the set.
    pub(crate) fn sees(&self, set: &str) -> bool {
        self.grant.as_ref().is_none_or(|g| g.may_touch(set))
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Write => "write",
        Scope::Admin => "admin",
    }
}

/// Authenticates a request by its headers and checks the operation's scope: the [`Access`]
/// its handlers get, or the refusal (already counted).
pub(crate) fn authorize(
    authenticator: Option<&Authenticator>,
    metrics: &Arc<Metrics>,
    api: Api,
    headers: &HeaderMap,
    operation: Operation,
) -> ApiResult<Access> {
    let grant = match authenticator {
        None => None,
        Some(authenticator) => {
            let value = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
            match authenticator.bearer(value) {
                Ok(grant) => Some(grant),
                Err((reason, error)) => {
                    metrics.auth_failure(api.as_str(), reason.as_str());
                    return Err(error);
                }
            }
        }
    };
    let access = Access::new(grant, metrics.clone(), api);
    access.require(operation)?;
    Ok(access)
}

/// What the HTTP middleware needs.
#[derive(Clone)]
pub(crate) struct HttpAuth {
    pub authenticator: Option<Arc<Authenticator>>,
    pub metrics: Arc<Metrics>,
}

/// The HTTP middleware: authenticates, checks the route's scope and the feature set of a
/// `/v1/feature-sets/{name}` route, and gives the handlers the request's [`Access`].
pub(crate) async fn http_layer(
    State(auth): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str());
    let Some(operation) = Operation::of_http_route(request.method(), route) else {
        return next.run(request).await;
    };
    let access = match authorize(
        auth.authenticator.as_deref(),
        &auth.metrics,
        Api::Http,
        request.headers(),
        operation,
    ) {
        Ok(access) => access,
        Err(e) => return e.into_response(),
    };
    let (mut parts, body) = request.into_parts();
    let name =
        axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(
            &mut parts,
            &(),
        )
        .await
        .ok()
        .and_then(|p| p.0.get("name").cloned());
    if let Some(name) = name {
        if let Err(e) = access.require_set(&name) {
            return e.into_response();
        }
    }
    request = Request::from_parts(parts, body);
    request.extensions_mut().insert(access);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (pattern, text, matches) in [
            ("*", "anything", true),
            ("users", "users", true),
            ("users", "users2", false),
            ("user_*", "user_features", true),
            ("user_*", "users", false),
            ("*_features", "user_features", true),
            ("u?er*", "user_features", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("", "", true),
            ("?", "", false),
        ] {
            assert_eq!(glob_matches(pattern, text), matches, "{pattern} vs {text}");
        }
    }

    #[test]
    fn verifies_tokens_and_schemes() {
        let config = AuthConfig {
            tokens: vec![
                TokenConfig::inline("reader", "reader-token-0123456789", &[Scope::Read]),
                TokenConfig::inline("writer", "writer-token-0123456789", &[Scope::Write]),
            ],
            allow_unauthenticated: false,
        };
        let auth = Authenticator::from_config(&config).unwrap().unwrap();
        assert_eq!(
            auth.bearer(Some(b"Bearer writer-token-0123456789"))
                .unwrap()
                .name,
            "writer"
        );
        assert_eq!(
            auth.bearer(Some(b"bearer  reader-token-0123456789 "))
                .unwrap()
                .name,
            "reader"
        );
        let refusal = |v: Option<&[u8]>| auth.bearer(v).err().unwrap().0;
        assert_eq!(refusal(None), Refusal::MissingCredentials);
        assert_eq!(
            refusal(Some(b"Basic reader-token-0123456789")),
            Refusal::MalformedCredentials
        );
        assert_eq!(refusal(Some(b"Bearer ")), Refusal::MalformedCredentials);
        assert_eq!(
            refusal(Some(b"Bearer reader-token-012345678")),
            Refusal::UnknownToken
        );
    }

    #[test]
    fn rejects_bad_token_sections_without_printing_tokens() {
        let check = |tokens: Vec<TokenConfig>, expected: &str| {
            let config = AuthConfig {
                tokens,
                allow_unauthenticated: false,
            };
            let err = Authenticator::from_config(&config).err().unwrap();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("secret-value"), "{err}");
        };
        check(
            vec![TokenConfig::inline("a", "short", &[Scope::Read])],
            "shorter than 16",
        );
        check(
            vec![TokenConfig::inline(
                "a",
                "secret-value with space",
                &[Scope::Read],
            )],
            "printable ASCII",
        );
        check(
            vec![TokenConfig::inline("a", "secret-value-0123456789", &[])],
            "scopes",
        );
        check(
            vec![
                TokenConfig::inline("a", "secret-value-0123456789", &[Scope::Read]),
                TokenConfig::inline("b", "secret-value-0123456789", &[Scope::Read]),
            ],
            "same value",
        );
        check(
            vec![
                TokenConfig::inline("a", "secret-value-0123456789", &[Scope::Read]),
                TokenConfig::inline("a", "secret-value-9876543210", &[Scope::Read]),
            ],
            "same name",
        );
        let mut both = TokenConfig::inline("a", "secret-value-0123456789", &[Scope::Read]);
        both.token_env = Some("X".into());
        check(vec![both], "exactly one");
        let mut glob = TokenConfig::inline("a", "secret-value-0123456789", &[Scope::Read]);
        glob.feature_sets = Some(vec!["users/*".into()]);
        check(vec![glob], "pattern");
    }

    #[test]
    fn scopes_follow_the_operation_table() {
        use Operation::*;
        assert_eq!(Operation::of_flight_method("Handshake"), None);
        assert_eq!(Operation::of_flight_method("DoPut"), Some(Ingest));
        assert_eq!(Operation::of_flight_method("DoExchange"), Some(ReadData));
        assert_eq!(Operation::of_action("delete_feature_set"), Manage);
        assert_eq!(Operation::of_action("rebuild_online"), Manage);
        assert_eq!(Operation::of_action("list_feature_sets"), Describe);
        assert_eq!(
            Operation::of_http_route(&Method::GET, Some("/health")),
            None
        );
        assert_eq!(
            Operation::of_http_route(&Method::DELETE, Some("/v1/feature-sets/{name}")),
            Some(Manage)
        );
        assert_eq!(Operation::of_http_route(&Method::GET, None), Some(Discover));
        for open in ["/", "/ui", "/ui/", "/ui/{*path}"] {
            assert_eq!(Operation::of_http_route(&Method::GET, Some(open)), None);
        }
        let get = |route| Operation::of_http_route(&Method::GET, Some(route));
        assert_eq!(get("/v1/feature-sets/{name}/distribution"), Some(ReadData));
        assert_eq!(get("/v1/feature-sets/{name}/freshness"), Some(Describe));
        assert_eq!(get("/v1/server/stats"), Some(Describe));
        assert_eq!(Manage.scope(), Some(Scope::Admin));
        assert_eq!(Discover.scope(), None);
    }
}
