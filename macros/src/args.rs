//! Argument parsing shared by the attributes: scope literals and `crate = "…"`.

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{Parse, ParseStream};
use syn::{Error, Expr, Ident, Lit, LitStr, Path, Token};

/// The arguments of `#[requires_scopes("a", "b", crate = "…")]`.
pub(crate) struct ScopeArgs {
    /// The scopes, validated (RFC 6749 scope tokens) and unique, in the order written.
    pub(crate) scopes: Vec<LitStr>,
    /// `crate = "…"`, if given.
    pub(crate) krate: Option<Path>,
}

impl Parse for ScopeArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut scopes: Vec<LitStr> = Vec::new();
        let mut krate = CrateArg::default();
        let mut errors: Option<Error> = None;
        let mut push_error = |e: Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        while !input.is_empty() {
            if input.peek(LitStr) {
                let lit: LitStr = input.parse()?;
                let value = lit.value();
                if let Err(e) = check_scope(&lit, &value) {
                    push_error(e);
                } else if scopes.iter().any(|s| s.value() == value) {
                    push_error(Error::new(
                        lit.span(),
                        format!("duplicate scope \"{value}\": list each scope once"),
                    ));
                } else {
                    scopes.push(lit);
                }
            } else if krate.try_parse(input)? {
                // `crate = "…"` consumed.
            } else if input.peek(Ident::peek_any) && input.peek2(Token![=]) {
                let key = input.call(Ident::parse_any)?;
                return Err(Error::new(
                    key.span(),
                    format!(
                        "unknown argument `{key}`: expected scope string literals such as \
                         \"files:read\", or `crate = \"path::to::mcp_oauth\"`"
                    ),
                ));
            } else {
                return Err(not_a_literal(input)?);
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(Self {
                scopes,
                krate: krate.path,
            }),
        }
    }
}

/// The error for an argument that is neither a string literal nor `key = value`.
fn not_a_literal(input: ParseStream<'_>) -> syn::Result<Error> {
    let expr: Expr = input.parse()?;
    let msg = match &expr {
        Expr::Lit(lit) if !matches!(lit.lit, Lit::Str(_)) => {
            "expected a string literal scope such as \"files:read\""
        }
        _ => {
            "expected a string literal scope such as \"files:read\": scopes must be written out \
             literally (not a constant, variable or macro) so that `#[scoped_tools]` can read them"
        }
    };
    Ok(Error::new_spanned(expr, msg))
}

/// Checks one scope literal against the RFC 6749 §3.3 `scope-token` grammar
/// (`1*( %x21 / %x23-5B / %x5D-7E )`).
fn check_scope(lit: &LitStr, value: &str) -> syn::Result<()> {
    if !lit.suffix().is_empty() {
        return Err(Error::new(
            lit.span(),
            "a scope literal cannot have a suffix",
        ));
    }
    if value.is_empty() {
        return Err(Error::new(
            lit.span(),
            "empty scope: a scope needs at least one character",
        ));
    }
    if value.contains(' ') {
        let parts: Vec<String> = value
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| format!("{s:?}"))
            .collect();
        return Err(Error::new(
            lit.span(),
            format!(
                "invalid scope {value:?}: a scope cannot contain spaces; write each scope as its \
                 own string: {}",
                parts.join(", ")
            ),
        ));
    }
    if let Some(c) = value.chars().find(|&c| {
        !(c == '\x21' || ('\x23'..='\x5b').contains(&c) || ('\x5d'..='\x7e').contains(&c))
    }) {
        return Err(Error::new(
            lit.span(),
            format!(
                "invalid scope {value:?}: character {c:?} is not allowed; a scope may only hold \
                 printable ASCII other than space, '\"' and '\\' (RFC 6749 §3.3)"
            ),
        ));
    }
    Ok(())
}

/// `crate = "path"`, at most once.
#[derive(Default)]
pub(crate) struct CrateArg {
    pub(crate) path: Option<Path>,
}

impl CrateArg {
    /// Parses `crate = "…"` if it comes next; returns whether it did.
    pub(crate) fn try_parse(&mut self, input: ParseStream<'_>) -> syn::Result<bool> {
        if !input.peek(Token![crate]) {
            return Ok(false);
        }
        let kw: Token![crate] = input.parse()?;
        input.parse::<Token![=]>()?;
        if !input.peek(LitStr) {
            let expr: Expr = input.parse()?;
            return Err(Error::new_spanned(
                expr,
                "expected a string: `crate = \"path::to::mcp_oauth\"`",
            ));
        }
        let lit: LitStr = input.parse()?;
        if self.path.is_some() {
            return Err(Error::new(kw.span, "`crate` set multiple times"));
        }
        let path: Path = lit.parse().map_err(|_| {
            Error::new(
                lit.span(),
                format!(
                    "`crate = {:?}` is not a path; expected something like \"::my_crate::mcp_oauth\"",
                    lit.value()
                ),
            )
        })?;
        self.path = Some(path);
        Ok(true)
    }

    /// The path to `mcp_oauth`: the given one or `::mcp_oauth`.
    pub(crate) fn or_default(path: Option<Path>) -> Path {
        path.unwrap_or_else(|| {
            let mut p: Path = Ident::new("mcp_oauth", Span::call_site()).into();
            p.leading_colon = Some(Default::default());
            p
        })
    }
}

/// The arguments of `#[scoped_tools(crate = "…")]`: only `crate`.
pub(crate) struct CrateOnly(pub(crate) Option<Path>);

impl Parse for CrateOnly {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut krate = CrateArg::default();
        while !input.is_empty() {
            if !krate.try_parse(input)? {
                let tt: proc_macro2::TokenTree = input.parse()?;
                return Err(Error::new_spanned(
                    tt,
                    "unknown argument: `#[scoped_tools]` only takes `crate = \"path::to::mcp_oauth\"`",
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(Self(krate.path))
    }
}
