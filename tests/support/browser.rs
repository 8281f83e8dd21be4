//! A small headless "browser" for the interop tests: it does what a person's browser does
//! between an MCP client opening the authorization URL and the client receiving its callback.
//!
//! - follows redirects itself (GET), one hop at a time, and stops at the first redirect that
//!   leaves the authorization server's origin: that `Location` is the client's callback URL,
//!   which is handed back to the client instead of being fetched;
//! - keeps cookies per host (the browser-binding cookie of the pending request);
//! - parses the HTML it gets: forms, their `action`, hidden inputs and submit buttons;
//! - on a page with a password field, fills in the user name and password and submits;
//!   on a page with a `decision` choice, submits `decision=approve` (or `deny`);
//! - on a third-party provider's confirmation page — a form whose only input is a hidden
//!   `prompt=consent`, as `oidc-provider`'s development consent page ("Continue") — submits
//!   it when approving (and stops there when denying).
//!
//! Every request is logged ([`Browser::log`]), so a failing test can print exactly what the
//! authorization server answered.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{COOKIE, LOCATION, SET_COOKIE};
use url::Url;

/// Bound on each request the browser makes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the number of pages one authorization may visit.
const MAX_STEPS: usize = 20;

/// One request the browser made.
#[derive(Debug, Clone)]
pub struct Step {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The URL.
    pub url: String,
    /// Form fields posted (passwords masked).
    pub form: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// Cookie names set by the response.
    pub set_cookies: Vec<String>,
    /// The first 600 characters of the body.
    pub body: String,
}

/// One HTML form.
#[derive(Debug, Clone, Default)]
pub struct Form {
    /// `action`, resolved against the page URL (the page itself when absent).
    pub action: String,
    /// `method`, upper-case (`GET` when absent).
    pub method: String,
    /// Named inputs with their values, in document order (`type=submit` excluded).
    pub fields: Vec<(String, String)>,
    /// Input types by name (`hidden`, `password`, `text`, …).
    pub types: BTreeMap<String, String>,
    /// Submit buttons: `(name, value)`.
    pub submits: Vec<(String, String)>,
}

impl Form {
    /// Whether the form has a field (or submit button) of this name.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name) || self.submits.iter().any(|(n, _)| n == name)
    }

    /// The value of a field.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the form asks for a password.
    pub fn is_login(&self) -> bool {
        self.types.values().any(|t| t == "password")
    }
}

/// What a page was.
#[derive(Debug, Clone)]
pub struct Page {
    /// Its URL.
    pub url: String,
    /// Its status.
    pub status: u16,
    /// Its HTML.
    pub body: String,
    /// Its forms.
    pub forms: Vec<Form>,
}

/// Where an authorization ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The authorization server redirected the browser out of its origin: the client's
    /// callback URL (with `code`, `state`, `iss`, or `error`).
    Callback(String),
    /// The browser got stuck on a page it cannot act on.
    Stuck(Page),
}

/// How to answer the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

#[derive(Debug, Clone)]
struct Cookie {
    host: String,
    name: String,
    value: String,
    path: String,
}

/// The browser. One per simulated user (cookies are kept across authorizations, as a real
/// browser would).
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    cookies: Mutex<Vec<Cookie>>,
    log: Mutex<Vec<Step>>,
    username: String,
    password: String,
    /// Other origins the flow passes through (an upstream identity provider).
    follow: Mutex<Vec<url::Origin>>,
    /// A path at which to stop, as if it were the client's callback.
    stop_at: Mutex<Option<String>>,
}

impl Browser {
    /// A browser that logs in as `username` / `password` when asked.
    pub fn new(username: &str, password: &str) -> Self {
        Self::with_client(username, password, Self::client_builder())
    }

    /// The browser's HTTP client settings (no redirects followed, a timeout, a browser's
    /// user agent), to add to (name resolution, a test CA) before [`with_client`].
    pub fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .user_agent("Mozilla/5.0 (X11; Linux x86_64) mcp-oauth-test-browser/1.0")
    }

    /// A browser on a client made from [`client_builder`](Self::client_builder).
    pub fn with_client(username: &str, password: &str, client: reqwest::ClientBuilder) -> Self {
        Self {
            http: client.build().expect("reqwest client"),
            cookies: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            username: username.to_owned(),
            password: password.to_owned(),
            follow: Mutex::new(Vec::new()),
            stop_at: Mutex::new(None),
        }
    }

    /// Also follows redirects to `url`'s origin (an upstream identity provider whose login
    /// and consent pages the browser fills in like ours; a form holding a hidden
    /// `prompt=consent` is submitted as it is).
    pub fn follow_origin(&self, url: &str) {
        let origin = Url::parse(url).expect("origin URL").origin();
        self.follow.lock().unwrap().push(origin);
    }

    /// Stops at the first redirect to a URL whose path is `path`, returning it as the
    /// callback (to tamper with an upstream callback before it arrives).
    pub fn stop_at_path(&self, path: Option<&str>) {
        *self.stop_at.lock().unwrap() = path.map(str::to_owned);
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Step> {
        self.log.lock().unwrap().clone()
    }

    /// The request log as text, for assertion messages.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for s in self.log.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "{} {} {:?} -> {} location={:?} set-cookie={:?}\n    {}",
                s.method,
                s.url,
                s.form,
                s.status,
                s.location,
                s.set_cookies,
                s.body.replace('\n', " ")
            );
        }
        out
    }

    /// Names of the cookies held for `host`.
    pub fn cookie_names(&self, host: &str) -> Vec<String> {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.host == host)
            .map(|c| c.name.clone())
            .collect()
    }

    /// Opens `authorize_url`, logs in and answers the consent page, until the authorization
    /// server redirects back to the client. Returns the callback URL.
    ///
    /// # Panics
    /// When the flow does not end at a callback; the message holds the transcript.
    pub async fn authorize(&self, authorize_url: &str, decision: Decision) -> String {
        match self.run(authorize_url, decision).await {
            Ok(Outcome::Callback(url)) => url,
            Ok(Outcome::Stuck(page)) => panic!(
                "the browser got stuck at {} ({}):\n{}\n--- transcript ---\n{}",
                page.url,
                page.status,
                page.body.chars().take(2000).collect::<String>(),
                self.transcript()
            ),
            Err(e) => panic!(
                "the browser failed: {e}\n--- transcript ---\n{}",
                self.transcript()
            ),
        }
    }

    /// Like [`authorize`](Self::authorize), but reports where it ended instead of panicking.
    pub async fn run(&self, authorize_url: &str, decision: Decision) -> Result<Outcome, String> {
        let origin = Url::parse(authorize_url)
            .map_err(|e| format!("bad authorization URL {authorize_url:?}: {e}"))?
            .origin();
        let mut next = Request::Get(authorize_url.to_owned());
        for _ in 0..MAX_STEPS {
            let (status, location, url, body) = self.send(&next).await?;
            if let Some(loc) = location {
                let target = Url::parse(&url)
                    .and_then(|base| base.join(&loc))
                    .map_err(|e| format!("bad Location {loc:?}: {e}"))?;
                let stop = self.stop_at.lock().unwrap().clone();
                let followed = self.follow.lock().unwrap().contains(&target.origin());
                if (target.origin() != origin && !followed)
                    || stop.is_some_and(|p| p == target.path())
                {
                    return Ok(Outcome::Callback(target.to_string()));
                }
                next = Request::Get(target.to_string());
                continue;
            }
            let page = Page {
                forms: parse_forms(&body, &url),
                url,
                status,
                body,
            };
            if status != 200 {
                return Ok(Outcome::Stuck(page));
            }
            let Some(form) = page.forms.iter().find(|f| {
                f.is_login()
                    || is_consent(f)
                    || (decision == Decision::Approve && is_provider_consent(f))
                    || f.value("prompt") == Some("consent")
            }) else {
                return Ok(Outcome::Stuck(page));
            };
            next = if form.value("prompt") == Some("consent") {
                Request::Post(form.action.clone(), form.fields.clone())
            } else if form.is_login() {
                self.fill_login(form)
            } else if is_consent(form) {
                fill_consent(form, decision)
            } else {
                Request::Post(form.action.clone(), form.fields.clone())
            };
        }
        Err(format!("no callback after {MAX_STEPS} pages"))
    }

    fn fill_login(&self, form: &Form) -> Request {
        let mut fields = form.fields.clone();
        let user_field = form
            .types
            .iter()
            .find(|(n, t)| matches!(t.as_str(), "text" | "email") || *n == "username")
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "username".to_owned());
        let pass_field = form
            .types
            .iter()
            .find(|(_, t)| *t == "password")
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "password".to_owned());
        set(&mut fields, &user_field, &self.username);
        set(&mut fields, &pass_field, &self.password);
        if let Some((n, v)) = form.submits.first() {
            set(&mut fields, n, v);
        }
        Request::Post(form.action.clone(), fields)
    }

    async fn send(&self, req: &Request) -> Result<(u16, Option<String>, String, String), String> {
        let (method, url, form) = match req {
            Request::Get(u) => ("GET", u.clone(), Vec::new()),
            Request::Post(u, f) => ("POST", u.clone(), f.clone()),
        };
        let parsed = Url::parse(&url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let mut builder = match req {
            Request::Get(_) => self.http.get(&url),
            Request::Post(..) => self.http.post(&url).form(&form),
        };
        let cookie_header = self.cookie_header(&host, parsed.path());
        if !cookie_header.is_empty() {
            builder = builder.header(COOKIE, cookie_header);
        }
        builder = builder.header("accept", "text/html,application/xhtml+xml");
        if let Request::Post(..) = req {
            // A same-origin form post, as a browser sends it.
            builder = builder.header("origin", parsed.origin().ascii_serialization());
        }
        let res = builder
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut set_cookies = Vec::new();
        for v in res.headers().get_all(SET_COOKIE) {
            if let Ok(v) = v.to_str()
                && let Some(name) = self.store_cookie(&host, v)
            {
                set_cookies.push(name);
            }
        }
        let body = res.text().await.unwrap_or_default();
        let masked = form
            .iter()
            .map(|(k, v)| {
                let v = if k.contains("password") {
                    "***".to_owned()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect();
        self.log.lock().unwrap().push(Step {
            method,
            url: url.clone(),
            form: masked,
            status,
            location: location.clone(),
            set_cookies,
            body: body.chars().take(600).collect(),
        });
        let location = location.filter(|_| (300..400).contains(&status));
        Ok((status, location, url, body))
    }

    fn cookie_header(&self, host: &str, path: &str) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.host == host && path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stores (or deletes, for `Max-Age=0` or an empty value) one `Set-Cookie`; returns its
    /// name.
    fn store_cookie(&self, host: &str, header: &str) -> Option<String> {
        let mut parts = header.split(';');
        let (name, value) = parts.next()?.trim().split_once('=')?;
        let mut path = "/".to_owned();
        let mut delete = value.is_empty();
        for attr in parts {
            let (k, v) = attr.trim().split_once('=').unwrap_or((attr.trim(), ""));
            match k.to_ascii_lowercase().as_str() {
                "path" if v.starts_with('/') => path = v.to_owned(),
                "max-age" if v.trim().parse::<i64>().is_ok_and(|s| s <= 0) => delete = true,
                _ => {}
            }
        }
        let mut jar = self.cookies.lock().unwrap();
        jar.retain(|c| !(c.host == host && c.name == name && c.path == path));
        if !delete {
            jar.push(Cookie {
                host: host.to_owned(),
                name: name.to_owned(),
                value: value.to_owned(),
                path,
            });
        }
        Some(name.to_owned())
    }
}

#[derive(Debug, Clone)]
enum Request {
    Get(String),
    Post(String, Vec<(String, String)>),
}

fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|(n, _)| n == name) {
        Some((_, v)) => *v = value.to_owned(),
        None => fields.push((name.to_owned(), value.to_owned())),
    }
}

fn is_consent(form: &Form) -> bool {
    form.has("decision")
}

/// `oidc-provider`'s development consent page: a POST form with nothing but a hidden
/// `prompt=consent` and a submit button.
fn is_provider_consent(form: &Form) -> bool {
    form.method == "POST"
        && form.value("prompt") == Some("consent")
        && form.types.values().all(|t| t == "hidden")
}

fn fill_consent(form: &Form, decision: Decision) -> Request {
    let wanted = match decision {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    };
    let mut fields: Vec<(String, String)> = form
        .fields
        .iter()
        .filter(|(n, _)| n != "decision")
        .cloned()
        .collect();
    // A radio group or a select offers both values; a pair of submit buttons names them.
    fields.push(("decision".to_owned(), wanted.to_owned()));
    Request::Post(form.action.clone(), fields)
}

/// Decodes the HTML character references that appear in attribute values.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The attributes of one start tag (`<input type="hidden" name=a value='b'>`), names
/// lower-cased, values decoded.
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let bytes = tag.as_bytes();
    // Skip the element name.
    let mut i = tag
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(tag.len());
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' {
            break;
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && bytes[i] != b'='
            && bytes[i] != b'>'
        {
            i += 1;
        }
        let name = tag[start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                i += 1;
                let vs = i;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                value = decode_entities(&tag[vs..i]);
                i += 1;
            } else {
                let vs = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                    i += 1;
                }
                value = decode_entities(&tag[vs..i]);
            }
        }
        if !name.is_empty() {
            attrs.entry(name).or_insert(value);
        }
    }
    attrs
}

/// Every form of a page, with the inputs, selects and buttons inside it.
pub fn parse_forms(html: &str, page_url: &str) -> Vec<Form> {
    let base = Url::parse(page_url).ok();
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut current: Option<Form> = None;
    let mut pos = 0;
    while let Some(off) = lower[pos..].find('<') {
        let start = pos + off;
        let Some(len) = lower[start..].find('>') else {
            break;
        };
        let end = start + len + 1;
        let tag = &html[start..end];
        let ltag = &lower[start..end];
        pos = end;
        if ltag.starts_with("<!--") {
            if let Some(close) = lower[start..].find("-->") {
                pos = start + close + 3;
            }
            continue;
        }
        let (closing, name_start) = if ltag.starts_with("</") {
            (true, 2)
        } else {
            (false, 1)
        };
        let name_len = ltag[name_start..]
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .unwrap_or(ltag.len() - name_start);
        let name = &ltag[name_start..name_start + name_len];
        let element = if closing {
            format!("/{name}")
        } else {
            name.to_owned()
        };
        match element.as_str() {
            "form" => {
                let a = attributes(tag);
                let action = a.get("action").cloned().unwrap_or_default();
                let action = match &base {
                    Some(b) if !action.is_empty() => {
                        b.join(&action).map_or(action, |u| u.to_string())
                    }
                    _ => page_url.to_owned(),
                };
                current = Some(Form {
                    action,
                    method: a
                        .get("method")
                        .map_or_else(|| "GET".to_owned(), |m| m.to_ascii_uppercase()),
                    ..Form::default()
                });
            }
            "/form" => {
                if let Some(f) = current.take() {
                    forms.push(f);
                }
            }
            "input" => {
                let Some(form) = current.as_mut() else {
                    continue;
                };
                let a = attributes(tag);
                let Some(name) = a.get("name").cloned() else {
                    continue;
                };
                let ty = a
                    .get("type")
                    .map_or_else(|| "text".to_owned(), |t| t.to_ascii_lowercase());
                let value = a.get("value").cloned().unwrap_or_default();
                match ty.as_str() {
                    "submit" | "image" => form.submits.push((name, value)),
                    "checkbox" | "radio" if !a.contains_key("checked") => {
                        form.types.insert(name, ty);
                    }
                    _ => {
                        form.types.insert(name.clone(), ty);
                        form.fields.push((name, value));
                    }
                }
            }
            "button" => {
                let Some(form) = current.as_mut() else {
                    continue;
                };
                let a = attributes(tag);
                let ty = a.get("type").map_or("submit", String::as_str);
                if ty == "submit"
                    && let Some(name) = a.get("name")
                {
                    form.submits
                        .push((name.clone(), a.get("value").cloned().unwrap_or_default()));
                }
            }
            "select" => {
                let Some(form) = current.as_mut() else {
                    continue;
                };
                if let Some(name) = attributes(tag).get("name") {
                    form.types.insert(name.clone(), "select".to_owned());
                    form.submits.push((name.clone(), String::new()));
                }
            }
            _ => {}
        }
    }
    if let Some(f) = current.take() {
        forms.push(f);
    }
    forms
}

/// One query parameter of a URL; `None` when absent. Panics when it appears twice.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = Url::parse(url).unwrap_or_else(|e| panic!("bad URL {url:?}: {e}"));
    let mut values = url.query_pairs().filter(|(k, _)| k == name);
    let first = values.next().map(|(_, v)| v.into_owned());
    assert!(values.next().is_none(), "{name} appears twice in {url}");
    first
}

/// One authorization the browser completed for a client script.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The authorization URL the client opened.
    pub url: String,
    /// The callback URL handed back to it.
    pub callback: String,
}

/// What a client script reported, with the authorizations the browser did for it.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// The script's final `{"event":"report",…}` line.
    pub report: serde_json::Value,
    /// Every authorization, in order.
    pub authorizations: Vec<Authorization>,
    /// The script's standard error.
    pub stderr: String,
    /// Whether it exited with status 0.
    pub success: bool,
}

/// Runs a client script that asks for authorizations over a line protocol:
///
/// - the script prints `{"event":"authorize","url":"<authorization URL>"}` on stdout where a
///   real client would open the browser;
/// - the test's [`Browser`] logs in, answers the consent page and writes the callback URL
///   (one line) to the script's stdin, where a real client's redirect listener would get it;
/// - the script ends with one `{"event":"report",…}` line.
///
/// Everything is bounded by `timeout`.
///
/// # Panics
/// On a timeout, a script that dies without a report, or a browser that cannot finish.
pub async fn drive_script(
    mut cmd: tokio::process::Command,
    browser: &Browser,
    decision: Decision,
    timeout: Duration,
) -> ScriptRun {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("cannot start the client script");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr_task = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = stderr_pipe.read_to_string(&mut buf).await;
        buf
    });

    let mut authorizations = Vec::new();
    let mut report = None;
    let mut other = Vec::new();
    let work = async {
        while let Some(line) = stdout
            .next_line()
            .await
            .expect("reading the script's stdout")
        {
            let event: Option<serde_json::Value> = line
                .starts_with('{')
                .then(|| serde_json::from_str(&line).ok())
                .flatten();
            match event.as_ref().and_then(|e| e["event"].as_str()) {
                Some("authorize") => {
                    let url = event.as_ref().unwrap()["url"].as_str().unwrap().to_owned();
                    let callback = browser.authorize(&url, decision).await;
                    stdin
                        .write_all(format!("{callback}\n").as_bytes())
                        .await
                        .expect("writing the callback to the script");
                    stdin.flush().await.expect("flush");
                    authorizations.push(Authorization { url, callback });
                }
                Some("report") => report = event,
                _ => other.push(line),
            }
        }
        child.wait().await.expect("waiting for the script")
    };
    let Ok(status) = tokio::time::timeout(timeout, work).await else {
        let _ = child.start_kill();
        let stderr = tokio::time::timeout(Duration::from_secs(5), stderr_task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        panic!(
            "the client script did not finish in {timeout:?}\nauthorizations: {authorizations:#?}\nstdout: {}\nstderr: {stderr}\n--- browser ---\n{}",
            other.join("\n"),
            browser.transcript()
        );
    };
    let stderr = tokio::time::timeout(Duration::from_secs(10), stderr_task)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let Some(report) = report else {
        panic!(
            "the client script ended ({status}) without a report\nstdout: {}\nstderr: {stderr}\n--- browser ---\n{}",
            other.join("\n"),
            browser.transcript()
        );
    };
    ScriptRun {
        report,
        authorizations,
        stderr,
        success: status.success(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_parsed_with_hidden_fields_and_buttons() {
        let html = r#"<html><body>
<!-- <form action="/nope"> -->
<form method="post" action="/authorize/login">
  <input type="hidden" name="request_id" value="r&amp;1">
  <input type=hidden name=csrf_token value='c&#x2F;2'>
  <label>User <input name="username" autocomplete="username"></label>
  <input type="password" name="password">
  <button type="submit">Sign in</button>
</form>
<form method="POST" action="http://127.0.0.1:1/authorize/consent">
  <input type="hidden" name="request_id" value="r1">
  <button name="decision" value="approve">Allow</button>
  <button name="decision" value="deny">Deny</button>
</form></body></html>"#;
        let forms = parse_forms(html, "http://127.0.0.1:1/authorize?x=1");
        assert_eq!(forms.len(), 2);
        let login = &forms[0];
        assert_eq!(login.action, "http://127.0.0.1:1/authorize/login");
        assert_eq!(login.method, "POST");
        assert_eq!(login.value("request_id"), Some("r&1"));
        assert_eq!(login.value("csrf_token"), Some("c/2"));
        assert!(login.is_login());
        assert!(!is_consent(login));
        let consent = &forms[1];
        assert!(is_consent(consent));
        assert_eq!(consent.submits.len(), 2);
        match fill_consent(consent, Decision::Approve) {
            Request::Post(action, fields) => {
                assert_eq!(action, "http://127.0.0.1:1/authorize/consent");
                assert_eq!(
                    fields,
                    [
                        ("request_id".to_owned(), "r1".to_owned()),
                        ("decision".to_owned(), "approve".to_owned())
                    ]
                );
            }
            Request::Get(_) => unreachable!(),
        }
    }

    #[test]
    fn cookies_are_kept_per_host_and_deleted() {
        let b = Browser::new("u", "p");
        b.store_cookie(
            "127.0.0.1",
            "mcp_oauth_req=abc; Path=/; HttpOnly; SameSite=Lax",
        );
        b.store_cookie("127.0.0.1", "other=1; Path=/authorize");
        assert_eq!(
            b.cookie_header("127.0.0.1", "/authorize/login"),
            "mcp_oauth_req=abc; other=1"
        );
        assert_eq!(b.cookie_header("127.0.0.1", "/token"), "mcp_oauth_req=abc");
        assert_eq!(b.cookie_header("localhost", "/"), "");
        b.store_cookie("127.0.0.1", "mcp_oauth_req=; Path=/; Max-Age=0");
        assert_eq!(b.cookie_header("127.0.0.1", "/"), "");
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            decode_entities("a&amp;b&lt;&#39;&#x27;&unknown;"),
            "a&b<''&unknown;"
        );
    }
}
