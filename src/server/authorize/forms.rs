//! Reading the parameters of `/authorize` and of its forms: duplicates noted, empty values
//! absent (RFC 6749 §3.1), counts and lengths capped (issue 8 item 7), and the typed
//! [`AuthorizeRequest`] the flow validates.

use std::collections::HashMap;

use axum::body::Body;

use crate::flows::authorize::AuthorizeRequest;

/// Largest form body read.
const MAX_FORM: usize = 32 * 1024;
/// Most parameters read from one request.
const MAX_PARAMS: usize = 64;
/// Longest query string of a `GET /authorize`.
pub(super) const MAX_QUERY: usize = 16 * 1024;
/// Length caps of the other parameters; any parameter not listed is capped at
/// [`MAX_OTHER_PARAM`]. (`client_id` and `redirect_uri` are checked by the flow, before
/// anything may redirect.)
const PARAM_CAPS: &[(&str, usize)] = &[
    ("state", 1024),
    ("scope", 1024),
    ("code_challenge", 128),
    ("code_challenge_method", 16),
    ("response_type", 64),
    ("response_mode", 64),
    ("resource", 2048),
    ("nonce", 512),
    ("prompt", 128),
    ("login_hint", 256),
];
/// Cap of any other parameter.
const MAX_OTHER_PARAM: usize = 2048;

/// Request parameters with duplicates noted. Empty values count as absent (RFC 6749 §3.1).
#[derive(Debug, Default)]
pub(super) struct Params {
    pub(super) values: HashMap<String, String>,
    duplicated: Vec<String>,
    too_many: bool,
}

impl Params {
    pub(super) fn parse(raw: &[u8]) -> Self {
        let mut p = Self::default();
        for (i, (k, v)) in form_urlencoded::parse(raw).enumerate() {
            if i >= MAX_PARAMS {
                p.too_many = true;
                break;
            }
            if v.is_empty() {
                continue;
            }
            if p.values.contains_key(k.as_ref()) {
                if !p.duplicated.iter().any(|d| d == k.as_ref()) {
                    p.duplicated.push(k.into_owned());
                }
            } else {
                p.values.insert(k.into_owned(), v.into_owned());
            }
        }
        p
    }

    /// A parameter given once.
    pub(super) fn one(&self, name: &str) -> Option<&str> {
        if self.is_duplicated(name) {
            return None;
        }
        self.values.get(name).map(String::as_str)
    }

    fn is_duplicated(&self, name: &str) -> bool {
        self.duplicated.iter().any(|d| d == name)
    }

    /// The first parameter (by name) longer than its cap (issue 8 item 7), if any.
    fn over_cap(&self) -> Option<&str> {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        names.into_iter().map(String::as_str).find(|name| {
            let cap = PARAM_CAPS
                .iter()
                .find(|(n, _)| n == name)
                .map_or(MAX_OTHER_PARAM, |(_, c)| *c);
            self.values[*name].len() > cap
        })
    }

    /// The authorization request these parameters make.
    pub(super) fn to_request(&self) -> AuthorizeRequest {
        let one = |name: &str| self.one(name).map(str::to_owned);
        AuthorizeRequest {
            client_id: one("client_id"),
            redirect_uri: one("redirect_uri"),
            response_type: one("response_type"),
            state: one("state"),
            scope: one("scope"),
            resource: one("resource"),
            code_challenge: one("code_challenge"),
            code_challenge_method: one("code_challenge_method"),
            prompt: one("prompt"),
            request_object: self.one("request").is_some(),
            request_uri: self.one("request_uri").is_some(),
            duplicated: self.duplicated.clone(),
            too_many: self.too_many,
            over_cap: self.over_cap().map(str::to_owned),
        }
    }
}

/// Reads a form body (any content type is parsed as `application/x-www-form-urlencoded`).
pub(super) async fn read_form(body: Body) -> Option<Params> {
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.ok()?;
    Some(Params::parse(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_note_duplicates_and_ignore_empty_values() {
        let p = Params::parse(b"a=1&b=2&a=3&c=&c=4&d=%20");
        assert_eq!(p.one("a"), None);
        assert!(p.is_duplicated("a"));
        assert_eq!(p.one("b"), Some("2"));
        assert_eq!(p.one("c"), Some("4"));
        assert_eq!(p.one("d"), Some(" "));
        let many: String = (0..100).map(|i| format!("p{i}=x&")).collect();
        assert!(Params::parse(many.as_bytes()).too_many);
    }

    #[test]
    fn the_request_drops_duplicates_and_names_the_first_parameter_over_its_cap() {
        let long = "x".repeat(1025);
        let raw = format!("client_id=c1&state={long}&scope=a&scope=b&zz={long}&request=r");
        let r = Params::parse(raw.as_bytes()).to_request();
        assert_eq!(r.client_id.as_deref(), Some("c1"));
        assert_eq!(r.scope, None);
        assert_eq!(r.duplicated, ["scope"]);
        assert_eq!(r.over_cap.as_deref(), Some("state"));
        assert!(r.request_object && !r.request_uri && !r.too_many);
    }
}
