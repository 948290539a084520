//! Who may talk to the dashboard: the holder of the token printed at start
//! (in the URL once, then in an HttpOnly cookie, or as a bearer token), and
//! only from the dashboard's own origin. Plain functions of the request's
//! headers, so the rules are unit-tested without a server.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap};

/// The cookie that carries the token after the first visit.
pub(crate) const COOKIE: &str = "flotilla_dashboard";

/// What a request may do, decided from its headers and query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It carries the token in a cookie or an `Authorization` header.
    Allowed,
    /// `?token=` is right: set the cookie and send the browser to the
    /// same page without the token in its address.
    SetCookie,
    /// No token, or a wrong one: 401.
    Unauthorized,
    /// Another site's page (its `Origin`), or a `Host` this server does
    /// not answer for (DNS rebinding): 403.
    Forbidden,
}

/// The token and the addresses the dashboard answers for.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    token: String,
    /// `host:port` values a browser may send in `Host`; empty when the
    /// dashboard listens on every address (`--listen 0.0.0.0:PORT`), where
    /// any name of the machine is its own.
    hosts: Vec<String>,
}

/// A fresh random token: 32 bytes from the system's generator, as hex.
pub(crate) fn new_token() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "cannot read random bytes for the dashboard's token".to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Guard {
    pub(crate) fn new(token: String, local: SocketAddr) -> Guard {
        let port = local.port();
        let hosts = if local.ip().is_unspecified() {
            Vec::new()
        } else if local.ip().is_loopback() {
            let mut hosts = vec![format!("localhost:{port}"), local.to_string()];
            if local.is_ipv4() {
                hosts.push(format!("[::1]:{port}"));
            } else {
                hosts.push(format!("127.0.0.1:{port}"));
            }
            hosts
        } else {
            vec![local.to_string()]
        };
        Guard { token, hosts }
    }

    /// The rules, in order: a foreign `Host` or `Origin` is refused first
    /// (403), then the token decides (401 without it).
    pub(crate) fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Verdict {
        let host = text(headers, header::HOST).unwrap_or_default();
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Verdict::Forbidden;
        }
        if let Some(origin) = text(headers, header::ORIGIN) {
            if !origin.eq_ignore_ascii_case(&format!("http://{host}")) {
                return Verdict::Forbidden;
            }
        }
        // The token in the address wins, so it leaves the address bar even
        // for a browser that has the cookie already.
        if let Some(given) = query.and_then(token_param) {
            if same(given.as_bytes(), self.token.as_bytes()) {
                return Verdict::SetCookie;
            }
        }
        if self.has_cookie(headers) || self.has_bearer(headers) {
            return Verdict::Allowed;
        }
        Verdict::Unauthorized
    }

    /// The `Set-Cookie` value for a browser that brought the right token.
    pub(crate) fn cookie(&self) -> String {
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", self.token)
    }

    fn has_cookie(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && same(value.as_bytes(), self.token.as_bytes()))
    }

    fn has_bearer(&self, headers: &HeaderMap) -> bool {
        text(headers, header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), self.token.as_bytes()))
    }
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `token` parameter of a query string (hex: nothing to decode).
fn token_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| value)
}

/// Compares in time that does not depend on where the first difference is,
/// so the token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn guard() -> Guard {
        Guard::new("abc123".into(), "127.0.0.1:8080".parse().unwrap())
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_in_the_url_sets_a_cookie_and_the_cookie_lets_in() {
        let g = guard();
        let h = headers(&[(header::HOST, "127.0.0.1:8080")]);
        assert_eq!(g.check(&h, Some("token=abc123")), Verdict::SetCookie);
        assert_eq!(g.check(&h, Some("x=1&token=abc123")), Verdict::SetCookie);
        assert_eq!(g.check(&h, Some("token=abc12")), Verdict::Unauthorized);
        assert_eq!(g.check(&h, None), Verdict::Unauthorized);
        let c = headers(&[
            (header::HOST, "localhost:8080"),
            (header::COOKIE, "a=b; flotilla_dashboard=abc123"),
        ]);
        assert_eq!(g.check(&c, None), Verdict::Allowed);
        let wrong = headers(&[
            (header::HOST, "localhost:8080"),
            (header::COOKIE, "flotilla_dashboard=abc124"),
        ]);
        assert_eq!(g.check(&wrong, None), Verdict::Unauthorized);
        let bearer = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::AUTHORIZATION, "Bearer abc123"),
        ]);
        assert_eq!(g.check(&bearer, None), Verdict::Allowed);
        assert!(g.cookie().contains("HttpOnly") && g.cookie().contains("SameSite=Strict"));
    }

    #[test]
    fn another_origin_or_host_is_forbidden_even_with_the_token() {
        let g = guard();
        let cookie = (header::COOKIE, "flotilla_dashboard=abc123");
        let own = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
            cookie.clone(),
        ]);
        assert_eq!(g.check(&own, None), Verdict::Allowed);
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "null",
        ] {
            let h = headers(&[
                (header::HOST, "127.0.0.1:8080"),
                (header::ORIGIN, origin),
                cookie.clone(),
            ]);
            assert_eq!(g.check(&h, None), Verdict::Forbidden, "{origin}");
        }
        // DNS rebinding: a name that points at 127.0.0.1 but is not ours.
        let rebound = headers(&[(header::HOST, "evil.example:8080"), cookie.clone()]);
        assert_eq!(g.check(&rebound, None), Verdict::Forbidden);
        assert_eq!(g.check(&HeaderMap::new(), None), Verdict::Forbidden);
    }

    #[test]
    fn every_address_accepts_any_host_but_still_its_own_origin() {
        let g = Guard::new("t".into(), "0.0.0.0:9000".parse().unwrap());
        let h = headers(&[
            (header::HOST, "box.lan:9000"),
            (header::COOKIE, "flotilla_dashboard=t"),
        ]);
        assert_eq!(g.check(&h, None), Verdict::Allowed);
        let foreign = headers(&[
            (header::HOST, "box.lan:9000"),
            (header::ORIGIN, "http://other.lan:9000"),
            (header::COOKIE, "flotilla_dashboard=t"),
        ]);
        assert_eq!(g.check(&foreign, None), Verdict::Forbidden);
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
