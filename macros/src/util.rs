//! Helpers shared by the expansions.

use proc_macro2::TokenStream;
use syn::{Attribute, ReturnType, Type};

/// Runs an attribute expansion. On error emits **the original item plus the
/// `compile_error!`**, so the item still exists and no knock-on errors follow (the way
/// `tokio-macros`' `token_stream_with_error` does). Prints the result when
/// `MCP_OAUTH_MACROS_DEBUG` is set.
pub(crate) fn expand_attr(
    name: &str,
    args: TokenStream,
    item: TokenStream,
    expand: fn(TokenStream, TokenStream) -> syn::Result<TokenStream>,
) -> TokenStream {
    let out = match expand(args, item.clone()) {
        Ok(out) => out,
        Err(err) => {
            let mut out = item;
            out.extend(err.into_compile_error());
            out
        }
    };
    if std::env::var_os("MCP_OAUTH_MACROS_DEBUG").is_some() {
        eprintln!("#[{name}] expands to:\n{out}\n");
    }
    out
}

/// Whether the attribute's path ends in `name` (`#[tool]`, `#[rmcp::tool]`, …), the rule
/// `#[tool_router]` itself uses.
pub(crate) fn is_attr(attr: &Attribute, name: &str) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|seg| seg.ident == name)
}

/// Whether the return type is spelled `Result<…>` (any path ending in `Result`).
pub(crate) fn returns_result(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let mut ty: &Type = ty;
    loop {
        match ty {
            Type::Paren(p) => ty = &p.elem,
            Type::Group(g) => ty = &g.elem,
            Type::Path(p) => {
                return p.qself.is_none()
                    && p.path
                        .segments
                        .last()
                        .is_some_and(|seg| seg.ident == "Result");
            }
            _ => return false,
        }
    }
}

/// Whether the return type names a `Future` (what `#[tool]` turns an `async fn` into:
/// `Pin<Box<dyn Future<Output = …> + Send + '_>>`).
pub(crate) fn returns_future(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => i == "Future",
            proc_macro2::TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(quote::ToTokens::to_token_stream(ty))
}
