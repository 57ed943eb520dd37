//! The login in front of the dashboard, its API and `/metrics`: one password, from
//! `admin.credentials_file` (made on first start like the secrets file, mode 0600).
//!
//! * A browser logs in at `/login` and gets a session cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` over TLS; 256 random bits, 12 hours). A POST with a
//!   session must carry its CSRF token in `X-CSRF-Token` (from `GET /api/session`).
//! * A script sends `Authorization: Bearer <password>` instead (no cookie, no CSRF).
//! * A wrong password is answered `401` after a second, one failure at a time (so at
//!   most one guess a second however many connections), and logged with the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The session cookie's name.
const COOKIE: &str = "srs_relay_session";
/// How long a session lasts.
const SESSION_TIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1000;
/// The wait before a wrong password's answer.
const FAILURE_DELAY: Duration = Duration::from_secs(1);

/// The password and the open sessions.
pub struct Auth {
    password: Vec<u8>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Held through a failure's delay: failures are answered one at a time.
    failures: tokio::sync::Mutex<()>,
    /// Cookies get `Secure` (the listener speaks TLS).
    secure: bool,
}

struct Session {
    csrf: String,
    expires: Instant,
}

impl Auth {
    /// `password` is the first line of the credentials file.
    pub fn new(password: Vec<u8>, secure: bool) -> Auth {
        Auth {
            password,
            sessions: Mutex::new(HashMap::new()),
            failures: tokio::sync::Mutex::new(()),
            secure,
        }
    }

    fn password_matches(&self, given: &[u8]) -> bool {
        !self.password.is_empty() && bool::from(self.password.ct_eq(given))
    }

    /// A new session: (cookie value, CSRF token).
    fn open_session(&self) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TIME,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of the live session `id`.
    fn session_csrf(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    fn close_session(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn cookie(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }

    /// Who is asking: a logged-in session (with its CSRF token) or a bearer of the
    /// password; `None` if neither.
    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self
                .password_matches(token.trim().as_bytes())
                .then_some(Caller::Bearer);
        }
        let id = session_cookie(headers)?;
        let csrf = self.session_csrf(&id)?;
        Some(Caller::Session { id, csrf })
    }
}

/// A caller that got through the login.
#[derive(Debug, Clone)]
pub enum Caller {
    Session { id: String, csrf: String },
    Bearer,
}

/// 256 random bits, hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    data_encoding::HEXLOWER.encode(&bytes)
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The middleware of every route behind the login. Pages redirect to `/login`; the API
/// and `/metrics` answer `401`. A POST from a session without the right
/// `X-CSRF-Token` is `403`.
pub async fn require_login(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(caller) = auth.caller(request.headers()) else {
        let path = request.uri().path();
        if path == "/" || path.starts_with("/ui") {
            return Redirect::to("/login").into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "login required\n",
        )
            .into_response();
    };
    if let Caller::Session { csrf, .. } = &caller
        && request.method() != Method::GET
        && request.method() != Method::HEAD
    {
        let given = request
            .headers()
            .get("x-csrf-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(csrf.as_bytes().ct_eq(given)) {
            return (StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token\n").into_response();
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[derive(Deserialize)]
pub struct LoginForm {
    password: String,
}

/// `GET /login`.
pub async fn login_page() -> Response {
    page(StatusCode::OK, "")
}

/// `POST /login`: a session cookie and on to the dashboard, or `401` after a delay.
pub async fn login(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(super::Peer(peer)): ConnectInfo<super::Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    if auth.password_matches(form.password.trim().as_bytes()) {
        let (id, _) = auth.open_session();
        tracing::info!(peer = %peer.ip(), "admin login");
        let cookie = auth.cookie(&id, SESSION_TIME.as_secs());
        return ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response();
    }
    let _one_at_a_time = auth.failures.lock().await;
    tracing::warn!(peer = %peer.ip(), "admin login refused: wrong password");
    tokio::time::sleep(FAILURE_DELAY).await;
    page(StatusCode::UNAUTHORIZED, "Wrong password.")
}

/// `POST /logout`.
pub async fn logout(
    State(s): State<Arc<super::AdminState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    if let Caller::Session { id, .. } = caller {
        s.auth.close_session(&id);
    }
    let cookie = s.auth.cookie("", 0);
    ([(header::SET_COOKIE, cookie)], "logged out\n").into_response()
}

/// `GET /api/session`: the CSRF token the page sends with its POSTs.
pub async fn session(axum::Extension(caller): axum::Extension<Caller>) -> Response {
    let csrf = match caller {
        Caller::Session { csrf, .. } => csrf,
        Caller::Bearer => String::new(),
    };
    axum::Json(serde_json::json!({ "csrf": csrf })).into_response()
}

fn page(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{error}</p>")
    };
    let html = include_str!("web/login.html").replace("{error}", &error);
    (
        status,
        super::pages::headers("text/html; charset=utf-8"),
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_session_or_the_password_as_bearer_lets_in() {
        let auth = Auth::new(b"s3cret".to_vec(), false);
        assert!(auth.caller(&headers(&[])).is_none());
        assert!(matches!(
            auth.caller(&headers(&[("authorization", "Bearer s3cret")])),
            Some(Caller::Bearer)
        ));
        assert!(
            auth.caller(&headers(&[("authorization", "Bearer s3cre")]))
                .is_none()
        );
        let (id, csrf) = auth.open_session();
        let cookie = format!("other=1; {COOKIE}={id}");
        match auth.caller(&headers(&[("cookie", &cookie)])) {
            Some(Caller::Session { csrf: c, .. }) => assert_eq!(c, csrf),
            other => panic!("{other:?}"),
        }
        auth.close_session(&id);
        assert!(auth.caller(&headers(&[("cookie", &cookie)])).is_none());
        assert!(
            auth.caller(&headers(&[("cookie", &format!("{COOKIE}=forged"))]))
                .is_none()
        );
    }

    #[test]
    fn an_empty_password_never_matches() {
        let auth = Auth::new(Vec::new(), false);
        assert!(!auth.password_matches(b""));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = Auth::new(b"x".to_vec(), true).cookie("v", 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(
            !Auth::new(b"x".to_vec(), false)
                .cookie("v", 60)
                .contains("Secure")
        );
    }

    #[test]
    fn sessions_are_bounded() {
        let auth = Auth::new(b"x".to_vec(), false);
        for _ in 0..MAX_SESSIONS + 5 {
            auth.open_session();
        }
        assert_eq!(auth.sessions.lock().unwrap().len(), MAX_SESSIONS);
    }
}
