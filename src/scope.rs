//! OAuth scopes: parsing per RFC 6749 §3.3, sets, and scope hierarchies.
//!
//! A scope token is one or more `NQCHAR`s (`%x21 / %x23-5B / %x5D-7E`: printable ASCII
//! without space, `"` and `\`). A scope *string* is scope tokens separated by single spaces.
//! [`ScopeSet`] keeps scopes sorted and unique, so its [`Display`](std::fmt::Display) form is
//! canonical and two sets compare equal whatever order they were written in.
//!
//! The MCP specification (2026-07-28) requires servers to "account for scope hierarchies": a
//! token holding a broader scope satisfies a request for a narrower one. [`ScopeHierarchy`]
//! records which scope implies which (transitively).
//!
//! ```
//! use mcp_oauth::scope::{ScopeHierarchy, ScopeSet};
//!
//! let granted: ScopeSet = "files:write".parse().unwrap();
//! let mut hierarchy = ScopeHierarchy::new();
//! hierarchy.add("admin", ["files:write"]);
//! hierarchy.add("files:write", ["files:read"]);
//!
//! let needed: ScopeSet = "files:read".parse().unwrap();
//! assert!(hierarchy.satisfies(&granted, &needed));
//! assert!(!hierarchy.satisfies(&granted, &"admin".parse().unwrap()));
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

/// The error returned when a string is not a valid scope or scope list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {value:?}: {reason}")]
pub struct InvalidScope {
    value: String,
    reason: &'static str,
}

/// Checks one scope token against the RFC 6749 `scope-token` grammar.
fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("a scope may not be empty");
    }
    if token
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    {
        Ok(())
    } else {
        Err("a scope may only hold printable ASCII other than space, '\"' and '\\'")
    }
}

/// One scope token, such as `files:read`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

impl Scope {
    /// Parses one scope token.
    ///
    /// # Errors
    /// When `value` is empty or holds a character RFC 6749 does not allow in a scope.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidScope> {
        let value = value.into();
        match check_token(&value) {
            Ok(()) => Ok(Self(value)),
            Err(reason) => Err(InvalidScope { value, reason }),
        }
    }

    /// The scope as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A sorted set of unique scopes; its string form is the scopes joined by single spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a space-separated scope string. Runs of spaces are tolerated, as real clients
    /// send them; every token must still be a valid scope.
    ///
    /// # Errors
    /// When any token holds a character RFC 6749 does not allow.
    pub fn parse(value: &str) -> Result<Self, InvalidScope> {
        value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(Scope::new)
            .collect()
    }

    /// Builds a set from scope strings.
    ///
    /// # Errors
    /// When any item is not a valid scope.
    pub fn try_from_iter<I, S>(items: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        items.into_iter().map(Scope::new).collect()
    }

    /// Whether the set holds `scope` (exactly; see [`ScopeHierarchy`] for implied scopes).
    #[must_use]
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    /// Adds a scope; returns whether it was new.
    pub fn insert(&mut self, scope: Scope) -> bool {
        self.0.insert(scope)
    }

    /// Removes a scope; returns whether it was present.
    pub fn remove(&mut self, scope: &str) -> bool {
        let found = self.0.iter().find(|s| s.as_str() == scope).cloned();
        found.is_some_and(|s| self.0.remove(&s))
    }

    /// Adds every scope of `other`.
    pub fn extend(&mut self, other: &Self) {
        self.0.extend(other.0.iter().cloned());
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        out.extend(other);
        out
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many scopes the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Whether every scope of `self` is also in `other` (exact match, no hierarchy).
    #[must_use]
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for ScopeSet {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ScopeSet {
    /// A scope string (`"a b c"`), as RFC 6749 writes scopes.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a ScopeSet {
    type Item = &'a Scope;
    type IntoIter = std::collections::btree_set::Iter<'a, Scope>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Which scope implies which: `admin` ⊇ `files:write` ⊇ `files:read`, and so on.
///
/// Implication is transitive and computed once, when the hierarchy is built, so a check on
/// the request path is a few hash look-ups.
#[derive(Debug, Clone, Default)]
pub struct ScopeHierarchy {
    /// Direct implications as configured.
    direct: HashMap<String, Vec<String>>,
    /// Transitive closure: scope → every scope it implies (not itself).
    closure: HashMap<String, BTreeSet<String>>,
}

impl ScopeHierarchy {
    /// An empty hierarchy: every scope satisfies only itself.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `broader` implies each of `narrower`.
    pub fn add<I, S>(&mut self, broader: impl Into<String>, narrower: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let entry = self.direct.entry(broader.into()).or_default();
        entry.extend(narrower.into_iter().map(Into::into));
        self.recompute();
    }

    fn recompute(&mut self) {
        let mut closure = HashMap::new();
        for start in self.direct.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&str> = vec![start];
            while let Some(scope) = stack.pop() {
                for next in self.direct.get(scope).into_iter().flatten() {
                    if next != start && seen.insert(next.clone()) {
                        stack.push(next);
                    }
                }
            }
            closure.insert(start.clone(), seen);
        }
        self.closure = closure;
    }

    /// Every scope `scope` implies, itself excluded.
    pub fn implied_by<'a>(&'a self, scope: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.closure
            .get(scope)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Whether a token holding `granted` may use something that needs `needed`.
    #[must_use]
    pub fn satisfies_one(&self, granted: &ScopeSet, needed: &str) -> bool {
        granted.contains(needed)
            || granted.iter().any(|g| {
                self.closure
                    .get(g.as_str())
                    .is_some_and(|c| c.contains(needed))
            })
    }

    /// Whether `granted` satisfies every scope of `needed`.
    #[must_use]
    pub fn satisfies(&self, granted: &ScopeSet, needed: &ScopeSet) -> bool {
        needed
            .iter()
            .all(|n| self.satisfies_one(granted, n.as_str()))
    }

    /// The scopes of `needed` that `granted` does not satisfy.
    #[must_use]
    pub fn missing(&self, granted: &ScopeSet, needed: &ScopeSet) -> ScopeSet {
        needed
            .iter()
            .filter(|n| !self.satisfies_one(granted, n.as_str()))
            .cloned()
            .collect()
    }

    /// Whether the hierarchy records no implication at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.direct.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let set: ScopeSet = "b  a b c".parse().unwrap();
        assert_eq!(set.to_string(), "a b c");
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn rejects_forbidden_characters() {
        for bad in ["a\"b", "a\\b", "é", "a\tb", "a\u{7f}"] {
            assert!(Scope::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(Scope::new("").is_err());
        assert!(Scope::new("files:read").is_ok());
        assert!(Scope::new("https://api.example.com/x.read").is_ok());
    }

    #[test]
    fn hierarchy_is_transitive_and_tolerates_cycles() {
        let mut h = ScopeHierarchy::new();
        h.add("admin", ["files:write"]);
        h.add("files:write", ["files:read"]);
        h.add("files:read", ["admin"]); // a silly cycle must not loop
        let admin: ScopeSet = "admin".parse().unwrap();
        assert!(h.satisfies_one(&admin, "files:read"));
        let read: ScopeSet = "files:read".parse().unwrap();
        assert!(h.satisfies_one(&read, "files:write")); // through the cycle
        let mut h = ScopeHierarchy::new();
        h.add("admin", ["files:write"]);
        h.add("files:write", ["files:read"]);
        assert!(!h.satisfies_one(&read, "files:write"));
        assert_eq!(
            h.missing(&read, &"files:read admin".parse().unwrap())
                .to_string(),
            "admin"
        );
    }
}
