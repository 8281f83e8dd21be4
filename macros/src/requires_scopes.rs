//! `#[requires_scopes("a", "b")]`: on an rmcp `#[tool]` method (an in-handler check) or on
//! an axum handler (a `Scoped<Marker>` extractor).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Error, Ident, ImplItemFn, LitStr, Path, parse_quote};

use crate::args::{CrateArg, ScopeArgs};
use crate::util::{is_attr, returns_future, returns_result};

/// What to write to fix a `#[requires_scopes]` that sits below `#[tool]`.
const PLACE_ABOVE: &str = "place #[requires_scopes] above #[tool]";

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: ScopeArgs = syn::parse2(args)?;
    if args.scopes.is_empty() {
        return Err(Error::new(
            Span::call_site(),
            "#[requires_scopes] needs at least one scope, e.g. #[requires_scopes(\"files:read\")]",
        ));
    }
    let krate = CrateArg::or_default(args.krate);
    let f: ImplItemFn = syn::parse2(item).map_err(|_| {
        Error::new(
            Span::call_site(),
            "#[requires_scopes] goes on an rmcp tool method (above #[tool]) or on an axum handler \
             `async fn`",
        )
    })?;

    if let Some(again) = f.attrs.iter().find(|a| is_attr(a, "requires_scopes")) {
        return Err(Error::new_spanned(
            again,
            "#[requires_scopes] is applied more than once: list every scope in one attribute",
        ));
    }
    if let Some(public) = f.attrs.iter().find(|a| is_attr(a, "public_tool")) {
        return Err(Error::new_spanned(
            public,
            "a tool cannot be both #[public_tool] and #[requires_scopes]: remove one of them",
        ));
    }

    if f.attrs.iter().any(|a| is_attr(a, "tool")) {
        rmcp_tool(&krate, &args.scopes, f)
    } else {
        if f.sig.asyncness.is_none() {
            let msg = if returns_future(&f.sig.output) {
                format!(
                    "#[requires_scopes] sees a fn that #[tool] has already turned into one returning \
                     a boxed future, so it cannot add its check: {PLACE_ABOVE}"
                )
            } else {
                format!(
                    "#[requires_scopes] needs an `async fn`: an axum handler, or an rmcp tool method \
                     (then {PLACE_ABOVE})"
                )
            };
            return Err(Error::new(Span::call_site(), msg));
        }
        if let Some(receiver) = f.sig.receiver() {
            return Err(Error::new_spanned(
                receiver,
                format!(
                    "#[requires_scopes] on a method needs #[tool] after it: on an rmcp tool, \
                     {PLACE_ABOVE}; an axum handler must be a free `async fn`"
                ),
            ));
        }
        axum_handler(&krate, &args.scopes, f)
    }
}

/// The rmcp form: an extra `Extension<http::request::Parts>` parameter and a check at the top
/// of the body, plus a hidden `<fn>_required_scopes()` recording the scopes.
fn rmcp_tool(krate: &Path, scopes: &[LitStr], mut f: ImplItemFn) -> syn::Result<TokenStream> {
    if !returns_result(&f.sig.output) {
        let msg = "#[requires_scopes] on an rmcp tool needs the fn to return `Result<_, E>` \
                   (with `E: From<rmcp::ErrorData>`, e.g. `Result<CallToolResult, ErrorData>`) so \
                   that a denied call can return the error; write `Result` out, not an alias";
        return Err(match &f.sig.output {
            syn::ReturnType::Default => Error::new_spanned(&f.sig, msg),
            out @ syn::ReturnType::Type(..) => Error::new_spanned(out, msg),
        });
    }
    let ret_span = f.sig.output.span();
    let parts = Ident::new("__mcp_oauth_parts", Span::mixed_site());
    let err = Ident::new("__mcp_oauth_err", Span::mixed_site());
    f.sig.inputs.push(parse_quote! {
        #parts: #krate::__private::Extension<#krate::__private::http::request::Parts>
    });
    let into = quote_spanned! {ret_span=> #krate::__private::tool_error(#err) };
    f.block.stmts.insert(
        0,
        parse_quote! {
            if let ::core::result::Result::Err(#err) = #krate::__private::check_tool_scopes(
                &#parts,
                &[#(#scopes),*],
            ) {
                return ::core::result::Result::Err(#into);
            }
        },
    );
    // Without mcp-oauth's `rmcp` feature, this is the error, on the attribute, that names
    // the fix. It sits in the record fn, which comes before the tool, so it is reported
    // before anything rmcp's macros say about the added parameter.
    let feature_check = quote_spanned! {Span::call_site()=>
        #krate::__private::require_rmcp_feature(#krate::__private::RmcpTool);
    };

    let vis = &f.vis;
    let record = format_ident!("{}_required_scopes", f.sig.ident);
    let doc = format!(
        "The scopes `#[requires_scopes]` demands of `{}`.",
        f.sig.ident
    );
    Ok(quote! {
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(dead_code)]
        #vis fn #record() -> &'static [&'static str] {
            #feature_check
            &[#(#scopes),*]
        }
        #f
    })
}

/// The axum form: a hidden `ScopeList` marker and a first parameter
/// `_: Scoped<Marker>`, so a missing scope is a 403 before the body runs.
fn axum_handler(krate: &Path, scopes: &[LitStr], mut f: ImplItemFn) -> syn::Result<TokenStream> {
    let marker = format_ident!("__McpOAuthScopes_{}", f.sig.ident);
    f.sig
        .inputs
        .insert(0, parse_quote! { _: #krate::__private::Scoped<#marker> });
    let vis = &f.vis;
    let doc = format!(
        "The scopes `#[requires_scopes]` demands of `{}`.",
        f.sig.ident
    );
    Ok(quote! {
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        #vis struct #marker;

        impl #krate::__private::ScopeList for #marker {
            const SCOPES: &'static [&'static str] = &[#(#scopes),*];
        }

        #f
    })
}

#[cfg(test)]
mod tests {
    use super::expand;
    use quote::quote;

    fn err(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
        match expand(args, item) {
            Ok(out) => panic!("expected an error, got {out}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rmcp_tool_gets_parts_parameter_and_check() {
        let out = expand(
            quote!("files:read", "files:write"),
            quote! {
                #[tool(description = "x")]
                async fn files_read(&self) -> Result<CallToolResult, ErrorData> { Ok(todo()) }
            },
        )
        .unwrap()
        .to_string();
        assert!(out.contains("fn files_read_required_scopes"), "{out}");
        assert!(
            out.contains(":: mcp_oauth :: __private :: Extension"),
            "{out}"
        );
        assert!(
            out.contains(
                "check_tool_scopes (& __mcp_oauth_parts , & [\"files:read\" , \"files:write\"] ,)"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "return :: core :: result :: Result :: Err (:: mcp_oauth :: __private :: tool_error (__mcp_oauth_err))"
            ),
            "{out}"
        );
        // Without mcp-oauth's `rmcp` feature, the record fn fails to compile with the
        // message naming the feature; it comes before the tool.
        let record = out.find("fn files_read_required_scopes").unwrap();
        let check = out
            .find(":: mcp_oauth :: __private :: require_rmcp_feature (:: mcp_oauth :: __private :: RmcpTool) ;")
            .unwrap_or_else(|| panic!("{out}"));
        let tool = out.find("async fn files_read (").unwrap();
        assert!(record < check && check < tool, "{out}");
        assert!(out.contains("\"files:read\" , \"files:write\""), "{out}");
        assert!(out.contains("# [tool (description = \"x\")]"), "{out}");
    }

    #[test]
    fn axum_handler_gets_scoped_marker() {
        let out = expand(
            quote!("files:write", crate = "::re::oauth"),
            quote! { pub async fn write(body: String) -> String { body } },
        )
        .unwrap()
        .to_string();
        assert!(out.contains("pub struct __McpOAuthScopes_write"), "{out}");
        // An axum handler needs no feature of mcp-oauth beyond `macros`.
        assert!(!out.contains("require_rmcp_feature"), "{out}");
        assert!(
            out.contains("_ : :: re :: oauth :: __private :: Scoped < __McpOAuthScopes_write >"),
            "{out}"
        );
    }

    #[test]
    fn errors() {
        assert!(
            err(
                quote!(),
                quote!(
                    async fn f() {}
                )
            )
            .contains("at least one scope")
        );
        assert!(
            err(
                quote!("a", "a"),
                quote!(
                    async fn f() {}
                )
            )
            .contains("duplicate scope")
        );
        assert!(
            err(
                quote!(""),
                quote!(
                    async fn f() {}
                )
            )
            .contains("empty scope")
        );
        assert!(
            err(
                quote!("a b"),
                quote!(
                    async fn f() {}
                )
            )
            .contains("\"a\", \"b\"")
        );
        assert!(
            err(
                quote!("a\"b"),
                quote!(
                    async fn f() {}
                )
            )
            .contains("not allowed")
        );
        assert!(
            err(
                quote!(SCOPE),
                quote!(
                    async fn f() {}
                )
            )
            .contains("literally")
        );
        assert!(
            err(
                quote!(1),
                quote!(
                    async fn f() {}
                )
            )
            .contains("string literal")
        );
        assert!(
            err(
                quote!(foo = "x"),
                quote!(
                    async fn f() {}
                )
            )
            .contains("unknown argument `foo`")
        );
        assert!(
            err(
                quote!("a", crate = "x", crate = "y"),
                quote!(
                    async fn f() {}
                )
            )
            .contains("multiple times")
        );
        assert!(
            err(
                quote!("a"),
                quote!(
                    fn f(
                        &self,
                    ) -> ::std::pin::Pin<Box<dyn ::std::future::Future<Output = ()> + Send + '_>>
                    {
                        Box::pin(async move {})
                    }
                )
            )
            .contains("place #[requires_scopes] above #[tool]")
        );
        assert!(
            err(
                quote!("a"),
                quote!(
                    #[tool]
                    async fn f(&self) -> String {
                        todo!()
                    }
                )
            )
            .contains("Result")
        );
        assert!(
            err(
                quote!("a"),
                quote!(
                    #[public_tool]
                    #[tool]
                    async fn f(&self) -> Result<(), E> {
                        todo!()
                    }
                )
            )
            .contains("both")
        );
        assert!(
            err(
                quote!("a"),
                quote!(
                    struct S;
                )
            )
            .contains("goes on")
        );
    }
}
