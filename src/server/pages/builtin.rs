//! The built-in pages: askama templates (`templates/mcp-oauth/*.html`) with the
//! `consent-page` feature, a minimal (still escaped, still working) HTML fallback without it.
//!
//! Every value is escaped by askama's HTML escaper; none of the pages needs JavaScript.

use std::sync::Arc;

use super::{ConsentView, ErrorView, LoginView, Pages};

pub(super) fn default_pages() -> Arc<dyn Pages> {
    Arc::new(Builtin)
}

/// The pages shipped with the crate.
struct Builtin;

#[cfg(feature = "consent-page")]
mod templates {
    use askama::Template;

    use super::super::{ConsentView, ErrorView, LoginView};

    #[derive(Template)]
    #[template(path = "mcp-oauth/login.html")]
    pub(super) struct Login<'a> {
        pub(super) v: &'a LoginView<'a>,
    }

    #[derive(Template)]
    #[template(path = "mcp-oauth/consent.html")]
    pub(super) struct Consent<'a> {
        pub(super) v: &'a ConsentView<'a>,
    }

    #[derive(Template)]
    #[template(path = "mcp-oauth/error.html")]
    pub(super) struct Error<'a> {
        pub(super) v: &'a ErrorView<'a>,
    }
}

#[cfg(feature = "consent-page")]
impl Pages for Builtin {
    fn login(&self, v: &LoginView<'_>) -> String {
        use askama::Template as _;
        templates::Login { v }
            .render()
            .unwrap_or_else(|_| fallback::login(v))
    }

    fn consent(&self, v: &ConsentView<'_>) -> String {
        use askama::Template as _;
        templates::Consent { v }
            .render()
            .unwrap_or_else(|_| fallback::consent(v))
    }

    fn error(&self, v: &ErrorView<'_>) -> String {
        use askama::Template as _;
        templates::Error { v }
            .render()
            .unwrap_or_else(|_| fallback::error(v))
    }
}

#[cfg(not(feature = "consent-page"))]
impl Pages for Builtin {
    fn login(&self, v: &LoginView<'_>) -> String {
        fallback::login(v)
    }

    fn consent(&self, v: &ConsentView<'_>) -> String {
        fallback::consent(v)
    }

    fn error(&self, v: &ErrorView<'_>) -> String {
        fallback::error(v)
    }
}

/// Plain pages without templates: used without the `consent-page` feature (and if a
/// template ever failed to render). Same fields, same forms, everything escaped.
mod fallback {
    use std::fmt::Write as _;

    use super::super::{ConsentView, ErrorView, LoginView};

    fn e(text: &str) -> String {
        ConsentView::escape(text)
    }

    fn doc(title: &str, body: &str) -> String {
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title></head><body>{body}</body></html>",
            e(title)
        )
    }

    fn hidden(request_id: &str, csrf_token: &str) -> String {
        format!(
            "<input type=\"hidden\" name=\"request_id\" value=\"{}\">\
             <input type=\"hidden\" name=\"csrf_token\" value=\"{}\">",
            e(request_id),
            e(csrf_token)
        )
    }

    pub(super) fn login(v: &LoginView<'_>) -> String {
        let who = match v.verified_host {
            Some(host) => format!(
                "The application published at <b>{}</b> (verified: this server fetched its \
                 identity from that host)",
                e(host)
            ),
            None => format!(
                "An application calling itself <b>{}</b> (a name the application chose; not \
                 verified)",
                e(v.client_name)
            ),
        };
        let mut body = format!(
            "<h1>Sign in</h1><p>{who} asks for access. The result goes to:</p><p><b>{}</b></p>",
            e(v.redirect_host)
        );
        if let Some(err) = v.error {
            let _ = write!(body, "<p role=\"alert\">{}</p>", e(err));
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{}\">{}\
             <p><label>User name <input type=\"text\" name=\"username\" autocomplete=\"username\" value=\"{}\" required></label></p>\
             <p><label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label></p>\
             <p><button type=\"submit\">Sign in</button></p></form>",
            e(v.action),
            hidden(v.request_id, v.csrf_token),
            e(v.username.unwrap_or(""))
        );
        doc("Sign in", &body)
    }

    pub(super) fn consent(v: &ConsentView<'_>) -> String {
        let who = match v.verified_host {
            Some(host) => format!(
                "The application published at <b>{}</b> (verified: this server fetched its \
                 identity from that host)",
                e(host)
            ),
            None => format!(
                "An application calling itself <b>{}</b> (a name the application chose; not \
                 verified)",
                e(v.client_name)
            ),
        };
        let mut body = format!(
            "<h1>Allow access?</h1><p>{who} wants to act on your behalf. If you allow it, \
             access is sent to:</p><p><b>{}</b></p><p>{}</p>",
            e(v.redirect_host),
            e(v.redirect_uri)
        );
        if v.loopback_only {
            body.push_str(
                "<p role=\"alert\"><b>This application receives access on this computer.</b> \
                 Access is sent to a local (loopback) address, which any program running on \
                 this computer can listen on. Allow it only if you started this sign-in \
                 yourself, from an application you trust.</p>",
            );
        }
        body.push_str("<ul>");
        for s in v.scopes {
            let _ = write!(
                body,
                "<li>{} (<code>{}</code>)</li>",
                e(s.description),
                e(s.name)
            );
        }
        body.push_str("</ul>");
        if !v.withheld.is_empty() {
            body.push_str(
                "<p>It also asked for the following, which <b>will not be granted</b> (not \
                 allowed for this account or this application):</p><ul>",
            );
            for s in v.withheld {
                let _ = write!(
                    body,
                    "<li>{} (<code>{}</code>)</li>",
                    e(s.description),
                    e(s.name)
                );
            }
            body.push_str("</ul>");
        }
        let _ = write!(
            body,
            "<p>Resource: {}</p><p>Signed in as {}. Client id: {}</p>\
             <form method=\"post\" action=\"{}\">{}\
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button> \
             <button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button></form>",
            e(v.resource),
            e(v.user),
            e(v.client_id),
            e(v.action),
            hidden(v.request_id, v.csrf_token)
        );
        doc("Allow access?", &body)
    }

    pub(super) fn error(v: &ErrorView<'_>) -> String {
        doc(
            v.title,
            &format!("<h1>{}</h1><p>{}</p>", e(v.title), e(v.message)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::ScopeView;
    use super::*;

    fn consent_view<'a>(scopes: &'a [ScopeView<'a>]) -> ConsentView<'a> {
        ConsentView {
            client_name: "<script>alert('x')</script>",
            verified_host: None,
            client_id: "c1\"><b>",
            redirect_uri: "http://127.0.0.1/cb?a=<i>",
            redirect_host: "127.0.0.1",
            loopback_only: true,
            scopes,
            withheld: &[],
            resource: "https://mcp.example.com/mcp",
            user: "al<i>ce",
            action: "https://auth.example.com/authorize/consent",
            request_id: "rid\"onfocus=\"x",
            csrf_token: "tok",
        }
    }

    fn assert_escaped(html: &str) {
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<i>"), "{html}");
        assert!(!html.contains("<b>\""), "{html}");
        assert!(!html.contains("\"onfocus"), "{html}");
    }

    #[test]
    fn builtin_pages_escape_everything() {
        let scopes = [ScopeView {
            name: "files:read",
            description: "Read <your> files",
        }];
        let v = consent_view(&scopes);
        for html in [Builtin.consent(&v), fallback::consent(&v)] {
            assert_escaped(&html);
            assert!(html.contains("127.0.0.1"));
            assert!(html.contains("loopback"));
            assert!(html.contains("not verified"));
            assert!(html.contains("files:read"));
            assert!(html.contains("value=\"approve\""));
            assert!(html.contains("value=\"deny\""));
            assert!(!html.contains("<script"), "no JavaScript: {html}");
        }
        // A client identified by a metadata document: the verified host, not the name.
        let mut v = consent_view(&scopes);
        v.verified_host = Some("app.example.com");
        v.client_name = "Totally Official App";
        for html in [Builtin.consent(&v), fallback::consent(&v)] {
            assert!(html.contains("app.example.com"), "{html}");
            assert!(html.contains("verified: this server fetched"), "{html}");
            assert!(!html.contains("Totally Official App"), "{html}");
            assert!(!html.contains("not verified"), "{html}");
        }
        let login = LoginView {
            client_name: "<script>x</script>",
            verified_host: None,
            redirect_host: "<i>host</i>",
            action: "/authorize/login",
            request_id: "r",
            csrf_token: "c",
            error: Some("<i>bad</i>"),
            username: Some("\"><script>"),
        };
        for html in [Builtin.login(&login), fallback::login(&login)] {
            assert_escaped(&html);
            assert!(html.contains("name=\"password\""));
            assert!(html.contains("not verified"));
        }
        let verified = LoginView {
            verified_host: Some("app.example.com"),
            client_name: "Totally Official App",
            ..login
        };
        for html in [Builtin.login(&verified), fallback::login(&verified)] {
            assert!(html.contains("app.example.com"), "{html}");
            assert!(html.contains("verified: this server fetched"), "{html}");
            assert!(!html.contains("Totally Official App"), "{html}");
        }
        let err = ErrorView {
            title: "<i>t</i>",
            message: "<script>m</script>",
        };
        for html in [Builtin.error(&err), fallback::error(&err)] {
            assert_escaped(&html);
        }
    }
}
