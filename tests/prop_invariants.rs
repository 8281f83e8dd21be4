//! Property tests (proptest) of the rules the security of the crate rests on (issue 8 item 10):
//!
//! - redirect-URI matching never accepts a URI that is not equal, or loopback-port-equal, to
//!   the registered one (checked against a model written apart from the crate's code);
//! - scope strings round-trip through parse and print;
//! - `WWW-Authenticate` challenges round-trip: an independent RFC 7235 parser reads back the
//!   `resource_metadata`, `scope` and `error` that went in, whatever characters they hold;
//! - the refresh-token family state machine (rotate, grace, reuse → revoke, expiry) of the
//!   memory store follows a simple model, step for step, through the `GrantStore` trait.
//!
//! The number of cases is proptest's default (256 per property); set `PROPTEST_CASES` for a
//! longer run.

#![cfg(feature = "server")]

use mcp_oauth::__fuzz::redirect_uri_matches;
use mcp_oauth::resource::AuthRejection;
use mcp_oauth::scope::ScopeSet;
use mcp_oauth::store::{GrantStore, MemoryStore, RefreshFamily, Rotation, SecretHash};
use mcp_oauth::verify::VerifyError;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Redirect URIs

/// The crate's one loopback rule, written again from the standard library: `localhost` in
/// any case with at most one final dot, `127.0.0.0/8`, `::1`, and IPv6 forms (mapped or
/// compatible) of `127.0.0.0/8`; IP literals bare or in brackets.
fn loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.octets()[0] == 127,
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            let [.., a, _, _, _] = v6.octets();
            v6 == std::net::Ipv6Addr::LOCALHOST
                || (s[..5].iter().all(|&x| x == 0) && s[5] == 0xffff && a == 127)
                || (s[..6].iter().all(|&x| x == 0) && a == 127)
        }
        Err(_) => bare
            .strip_suffix('.')
            .unwrap_or(bare)
            .eq_ignore_ascii_case("localhost"),
    }
}

/// `(host, rest)` when `uri` is `http://` + a loopback host + an optional `:digits` (1 to 5)
/// port, followed by nothing or by `/`, `?` or `#`. The model of "loopback-port-equal": the
/// host is what stands before the port (a bracketed literal, or up to the last `:`).
fn loopback(uri: &str) -> Option<(&str, &str)> {
    let after = uri.strip_prefix("http://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if !loopback_host(host) {
        return None;
    }
    let port = &authority[host.len()..];
    if let Some(digits) = port.strip_prefix(':') {
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    } else if !port.is_empty() {
        return None;
    }
    Some((host, rest))
}

fn loopback_port_equal(a: &str, b: &str) -> bool {
    matches!((loopback(a), loopback(b)), (Some(x), Some(y)) if x == y)
}

fn uri_part(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(options)
}

/// `common` most of the time, otherwise one of `odd`.
fn mostly(
    common: &'static str,
    odd: &'static [&'static str],
) -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(common), 1 => uri_part(odd)]
}

/// URIs built from parts chosen to sit near the rules' edges: loopback look-alikes, user
/// info, odd ports, case, dot segments, queries and fragments. Mostly `http://` with a
/// loopback host, so that both "equal but for the port" and near misses are frequent.
fn near_uri() -> impl Strategy<Value = String> {
    (
        mostly(
            "http",
            &["https", "HTTP", "com.example.app", "cursor", "javascript"],
        ),
        mostly("://", &[":", ":/", ":///"]),
        prop_oneof![
            3 => uri_part(&["127.0.0.1", "localhost", "[::1]"]),
            2 => uri_part(&[
                "LOCALHOST",
                "127.0.0.2",
                "127.1",
                "[::2]",
                "localhost.evil.com",
                "127.0.0.1.evil.com",
                "localhost@evil.com",
                "evil.com@127.0.0.1",
                "app.example.com",
                "",
            ]),
        ],
        uri_part(&[
            "",
            "",
            ":",
            ":80",
            ":8080",
            ":49152",
            ":65535",
            ":123456",
            ":abc",
            ":80@evil.com",
            ":0",
            ":080",
        ]),
        uri_part(&[
            "",
            "/",
            "/cb",
            "/cb",
            "/cb/",
            "/CB",
            "/cb?x=1",
            "?x=1",
            "#f",
            "/cb#f",
            "/cb/../evil",
            "%2Fcb",
            "@evil.com/cb",
            ":81/cb",
        ]),
    )
        .prop_map(|(s, sep, h, p, path)| format!("{s}{sep}{h}{p}{path}"))
}

/// A requested URI derived from a registered one: the same, with another port, or with one
/// character inserted, removed or replaced.
fn variant_of(registered: String) -> impl Strategy<Value = (String, String)> {
    let len = registered.len();
    (
        0..=len,
        proptest::sample::select(vec![
            ':', '/', '@', '.', '?', '#', '%', 'A', 'a', '1', '0', '[', ']', '\\', ' ',
        ]),
        0u8..5,
        0u32..70000,
    )
        .prop_map(move |(at, ch, how, port)| {
            let mut r = registered.clone();
            match how {
                0 => {}
                1 => r.insert(at, ch),
                2 if at < r.len() => {
                    r.remove(at);
                }
                3 if at < r.len() => {
                    r.remove(at);
                    r.insert(at, ch);
                }
                _ => {
                    if let Some(i) = r.find("://") {
                        let auth_start = i + 3;
                        let auth_end = r[auth_start..]
                            .find(['/', '?', '#'])
                            .map_or(r.len(), |e| auth_start + e);
                        let host_end = r[auth_start..auth_end]
                            .rfind(':')
                            .map_or(auth_end, |c| auth_start + c);
                        r.replace_range(host_end..auth_end, &format!(":{port}"));
                    }
                }
            }
            (registered.clone(), r)
        })
}

fn redirect_pair() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (near_uri(), near_uri()),
        near_uri().prop_flat_map(variant_of),
        ("\\PC{0,40}", "\\PC{0,40}"),
    ]
}

proptest! {
    /// Soundness: a match is equality, or two `http` loopback URIs equal but for the port.
    #[test]
    fn redirect_matching_never_accepts_another_uri((registered, requested) in redirect_pair()) {
        if redirect_uri_matches(&registered, &requested) {
            prop_assert!(
                registered == requested || loopback_port_equal(&registered, &requested),
                "{requested:?} matched the registered {registered:?}"
            );
        }
    }

    /// Completeness, so the property above is not vacuous: equal URIs match, and loopback
    /// URIs match on any port (RFC 8252 §7.3).
    #[test]
    fn redirect_matching_accepts_equal_and_loopback_port_variants(
        (registered, requested) in redirect_pair()
    ) {
        prop_assert!(redirect_uri_matches(&registered, &registered));
        if loopback_port_equal(&registered, &requested) {
            prop_assert!(
                redirect_uri_matches(&registered, &requested),
                "{requested:?} should match {registered:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scopes

/// One RFC 6749 §3.3 scope token: printable ASCII except space, `"` and `\`.
const SCOPE_TOKEN: &str = "[!#-\\[\\]-~]{1,12}";

proptest! {
    /// A set printed and parsed again is the same set, and printing is canonical (sorted,
    /// unique, single spaces).
    #[test]
    fn scope_sets_round_trip(tokens in proptest::collection::vec(SCOPE_TOKEN, 0..8), spaces in 1usize..4) {
        let written = tokens.join(&" ".repeat(spaces));
        let set = ScopeSet::parse(&written).expect("valid tokens parse");
        let printed = set.to_string();
        let again = ScopeSet::parse(&printed).expect("printed form parses");
        prop_assert_eq!(&again, &set);
        prop_assert_eq!(again.to_string(), printed.clone());
        let mut expected: Vec<&str> = tokens.iter().map(String::as_str).collect();
        expected.sort_unstable();
        expected.dedup();
        prop_assert_eq!(printed, expected.join(" "));
    }

    /// Any string either fails to parse or round-trips; a parsed scope never holds a space,
    /// `"`, `\` or a non-printable character.
    #[test]
    fn any_scope_string_parses_to_valid_tokens_or_fails(s in "\\PC{0,40}|[ -~]{0,40}") {
        if let Ok(set) = ScopeSet::parse(&s) {
            for scope in set.iter() {
                let t = scope.as_str();
                prop_assert!(!t.is_empty());
                prop_assert!(
                    t.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)),
                    "{t:?}"
                );
            }
            prop_assert_eq!(ScopeSet::parse(&set.to_string()).expect("round trip"), set);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WWW-Authenticate

/// An RFC 7235 challenge parser written for this test: `Scheme name="v", name=token, ...`,
/// quoted-strings with `\` escapes. `None` when the value is not well formed.
fn parse_challenge(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut chars = value.chars().peekable();
    let mut scheme = String::new();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            break;
        }
        scheme.push(c);
        chars.next();
    }
    let mut params = Vec::new();
    loop {
        while matches!(chars.peek(), Some(' ' | ',')) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)) {
                return None;
            }
            name.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || name.is_empty() {
            return None;
        }
        let mut v = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => v.push(chars.next()?),
                    c => v.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == ' ' {
                    break;
                }
                v.push(c);
                chars.next();
            }
        }
        params.push((name, v));
        match chars.peek() {
            None => break,
            Some(',') => {}
            Some(_) => return None,
        }
    }
    Some((scheme, params))
}

fn scope_set() -> impl Strategy<Value = ScopeSet> {
    proptest::collection::vec(SCOPE_TOKEN, 0..5)
        .prop_map(|v| ScopeSet::try_from_iter(v).expect("valid scopes"))
}

fn rejection() -> impl Strategy<Value = AuthRejection> {
    prop_oneof![
        scope_set().prop_map(|scope| AuthRejection::MissingToken { scope }),
        scope_set().prop_map(|scope| AuthRejection::InvalidToken {
            error: VerifyError::Malformed,
            scope
        }),
        (scope_set(), scope_set())
            .prop_map(|(needed, granted)| AuthRejection::InsufficientScope { needed, granted }),
    ]
}

proptest! {
    /// The challenge is a valid header value, and parses back to the `resource_metadata`
    /// that went in (printable ASCII kept exactly, `"` and `\` included; control and
    /// non-ASCII characters dropped), the scope the refusal names, and its error code.
    #[test]
    fn www_authenticate_round_trips(
        rejection in rejection(),
        metadata in "[ -~]{0,60}|\\PC{0,30}|[\\x00-\\x1f\"\\\\,= ]{0,20}",
    ) {
        let header = rejection
            .www_authenticate(&metadata)
            .expect("credential refusals have a challenge");
        prop_assert!(http::HeaderValue::from_str(&header).is_ok(), "{header:?}");
        let (scheme, params) = parse_challenge(&header)
            .ok_or_else(|| TestCaseError::fail(format!("unparsable challenge {header:?}")))?;
        prop_assert_eq!(scheme, "Bearer");
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let kept: String = metadata
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .collect();
        prop_assert_eq!(get("resource_metadata"), Some(kept), "{}", header);
        let scope = rejection.challenge_scope().filter(|s| !s.is_empty());
        prop_assert_eq!(get("scope"), scope.map(|s| s.to_string()), "{}", header);
        let error = match &rejection {
            AuthRejection::MissingToken { .. } => None,
            AuthRejection::InvalidToken { .. } => Some("invalid_token".to_owned()),
            AuthRejection::InsufficientScope { .. } => Some("insufficient_scope".to_owned()),
            _ => unreachable!(),
        };
        prop_assert_eq!(get("error"), error, "{}", header);
        let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        prop_assert_eq!(names.len(), before, "a parameter twice: {}", header);
    }
}

// ---------------------------------------------------------------------------------------------
// The refresh-token family state machine

const T0: u64 = 1_700_000_000;

#[derive(Debug, Clone)]
enum Step {
    /// Present the token issued `back` rotations ago (0 = the newest), after `wait` seconds.
    Refresh { back: usize, wait: u64 },
    /// Present a token the store never saw.
    Unknown,
    /// Revoke the family (RFC 7009 revocation, logout).
    Revoke,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..4, prop_oneof![Just(0u64), 0u64..15, 0u64..120])
            .prop_map(|(back, wait)| Step::Refresh { back, wait }),
        1 => Just(Step::Unknown),
        1 => Just(Step::Revoke),
    ]
}

/// The model: which token is current, which one was rotated out when (with the sealed
/// successor stored then), whether the family is revoked, and when it expires.
#[derive(Debug)]
struct Model {
    current: usize,
    previous: Option<(usize, u64, Vec<u8>)>,
    revoked: bool,
    expires_at: u64,
    grace: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Rotated,
    Grace(Vec<u8>),
    Reused,
    Invalid,
}

impl Model {
    fn refresh(&mut self, presented: usize, successor: usize, now: u64) -> Expect {
        if self.revoked || now >= self.expires_at {
            return Expect::Invalid;
        }
        if presented == self.current {
            self.previous = Some((presented, now, sealed(successor)));
            self.current = successor;
            return Expect::Rotated;
        }
        if let Some((prev, at, sealed)) = &self.previous
            && *prev == presented
            && now <= at + self.grace
        {
            return Expect::Grace(sealed.clone());
        }
        self.revoked = true;
        Expect::Reused
    }
}

fn token(i: usize) -> SecretHash {
    SecretHash::of(&format!("refresh-token-{i}"))
}

fn sealed(i: usize) -> Vec<u8> {
    format!("sealed-{i}").into_bytes()
}

fn outcome(r: &Rotation) -> Expect {
    match r {
        Rotation::Rotated(_) => Expect::Rotated,
        Rotation::Grace {
            sealed_successor, ..
        } => Expect::Grace(sealed_successor.clone()),
        Rotation::Reused { .. } => Expect::Reused,
        _ => Expect::Invalid,
    }
}

proptest! {
    /// Every step of a random sequence of refreshes (current, previous in and out of the
    /// grace window, older tokens, unknown tokens), revocations and waits gets exactly the
    /// outcome the model predicts: rotation of the current token; the stored successor for
    /// the previous one within the grace window; reuse of any other token of a live family
    /// revokes it; nothing works once revoked or expired.
    #[test]
    fn refresh_family_follows_the_model(
        steps in proptest::collection::vec(step(), 1..40),
        grace in prop_oneof![Just(0u64), 1u64..30],
        ttl in 60u64..1500,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let store = MemoryStore::new();
            let family = RefreshFamily {
                family_id: "fam".to_owned(),
                client_id: "app".to_owned(),
                subject: "alice".to_owned(),
                scope: ScopeSet::parse("read").unwrap(),
                resource: "https://mcp.example.com/mcp".to_owned(),
                claims: serde_json::Map::new(),
                auth_time: T0,
                created_at: T0,
                expires_at: T0 + ttl,
            };
            store.create_family(family, Some(token(0))).await.unwrap();
            let mut model = Model {
                current: 0,
                previous: None,
                revoked: false,
                expires_at: T0 + ttl,
                grace,
            };
            let mut issued = 1usize;
            let mut now = T0;
            let mut unknown = 1_000_000usize;
            for (n, step) in steps.iter().enumerate() {
                let (presented, expected) = match *step {
                    Step::Refresh { back, wait } => {
                        now += wait;
                        let presented = issued.saturating_sub(1 + back);
                        (presented, model.refresh(presented, issued, now))
                    }
                    Step::Unknown => {
                        unknown += 1;
                        (unknown, Expect::Invalid)
                    }
                    Step::Revoke => {
                        store.revoke_family("fam", now).await.unwrap();
                        model.revoked = true;
                        continue;
                    }
                };
                let got = store
                    .rotate_refresh(&token(presented), token(issued), sealed(issued), now, grace)
                    .await
                    .unwrap();
                prop_assert_eq!(
                    outcome(&got),
                    expected,
                    "step {} {:?} (token {}, t+{}): {:?}; model {:?}",
                    n, step, presented, now - T0, got, model
                );
                if let Rotation::Rotated(f) = &got {
                    prop_assert_eq!(&f.family_id, "fam");
                    issued += 1;
                }
                if let Rotation::Reused { family_id } = &got {
                    prop_assert_eq!(family_id, "fam");
                }
                // A revoked family's access tokens are refused too.
                if model.revoked {
                    prop_assert!(store.is_token_revoked("fam.any-jti", now).await.unwrap());
                }
            }
            Ok(())
        })?;
    }
}
