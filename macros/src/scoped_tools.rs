//! `#[public_tool]` (a marker) and `#[scoped_tools]` (the collector on the impl block, which
//! also writes each declared tool's `securitySchemes` into its `#[tool(meta = …)]`).

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Attribute, Error, Expr, FnArg, ImplItem, ImplItemFn, ItemImpl, Lit, Meta, Token, Type};

use crate::args::{CrateArg, CrateOnly, ScopeArgs};
use crate::util::is_attr;

/// `#[public_tool]`: checks its place and leaves the item unchanged.
pub(crate) fn expand_public_tool(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !args.is_empty() {
        return Err(Error::new_spanned(
            args,
            "#[public_tool] takes no arguments",
        ));
    }
    let f: ImplItemFn = syn::parse2(item.clone()).map_err(|_| {
        Error::new(
            Span::call_site(),
            "#[public_tool] goes on an rmcp tool method (one carrying #[tool])",
        )
    })?;
    if let Some(scoped) = f.attrs.iter().find(|a| is_attr(a, "requires_scopes")) {
        return Err(Error::new_spanned(
            scoped,
            "a tool cannot be both #[public_tool] and #[requires_scopes]: remove one of them",
        ));
    }
    Ok(item)
}

/// `#[scoped_tools]`: collects every `#[tool]` method's declared access into
/// `Self::tool_requirements()`, and puts the matching `securitySchemes` into each declared
/// tool's `_meta` (through `#[tool(meta = …)]`, before `#[tool]` expands).
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let CrateOnly(krate) = syn::parse2(args)?;
    let krate = CrateArg::or_default(krate);
    let mut imp: ItemImpl = syn::parse2(item).map_err(|_| {
        Error::new(
            Span::call_site(),
            "#[scoped_tools] goes on the `impl` block that carries #[tool_router]",
        )
    })?;
    if let Some((path, _)) = &imp.trait_ {
        return Err(Error::new_spanned(
            path,
            "#[scoped_tools] goes on the inherent `impl` block that carries #[tool_router], not on \
             a trait impl",
        ));
    }

    let mut any_tool = false;
    let mut entries = Vec::new();
    let mut auth_params = Vec::new();
    for item in &mut imp.items {
        let ImplItem::Fn(f) = item else { continue };
        let Some(tool) = f.attrs.iter().position(|a| is_attr(a, "tool")) else {
            continue;
        };
        let tool = &f.attrs[tool];
        any_tool = true;
        auth_params.extend(auth_param_types(f));
        let name = tool_name(tool).unwrap_or_else(|| f.sig.ident.to_string());
        let scoped: Vec<&Attribute> = f
            .attrs
            .iter()
            .filter(|a| is_attr(a, "requires_scopes"))
            .collect();
        let public = f.attrs.iter().any(|a| is_attr(a, "public_tool"));
        let access = match (scoped.as_slice(), public) {
            ([], true) => quote! { #krate::__private::ToolAccess::Public },
            ([attr], false) => {
                // An attribute that does not parse is reported by `#[requires_scopes]` itself.
                let Some(scopes) = scopes_of(attr) else {
                    continue;
                };
                quote! { #krate::__private::ToolAccess::Scopes(&[#(#scopes),*]) }
            }
            // Neither: the tool needs a token with the policy's base scopes, so it is not
            // listed. Both, or twice: the fn-level attributes report it.
            _ => continue,
        };
        entries.push(quote! {
            #krate::__private::ToolRequirement { name: #name, access: #access }
        });
        if let Some(tool) = f.attrs.iter_mut().find(|a| is_attr(a, "tool")) {
            add_security_schemes(tool, &krate, &access);
        }
    }
    if !any_tool {
        return Err(Error::new_spanned(
            &imp.self_ty,
            "#[scoped_tools] found no #[tool] method in this impl block: put it on the impl block \
             that carries #[tool_router]",
        ));
    }

    if !auth_params.is_empty() {
        // First in the block, so that without mcp-oauth's `rmcp` feature this error, on the
        // parameter, comes before rmcp's own about `Auth` (in `#[tool_router]`'s fn, last).
        let checks = auth_params.iter().map(|ty| {
            quote_spanned! {ty.span()=>
                #krate::__private::require_rmcp_feature(
                    (&#krate::__private::ParamProbe::<#ty>::new()).use_(),
                );
            }
        });
        imp.items.insert(
            0,
            syn::parse_quote! {
                /// `#[scoped_tools]`: the tools' `Auth` parameters need mcp-oauth's `rmcp`
                /// feature (a compile error naming it otherwise).
                #[doc(hidden)]
                #[allow(dead_code, clippy::needless_borrow)]
                fn __mcp_oauth_auth_params_need_the_rmcp_feature() {
                    #[allow(unused_imports)]
                    use #krate::__private::{ProbeAuth as _, ProbeOther as _};
                    #(#checks)*
                }
            },
        );
    }

    let self_ty = &imp.self_ty;
    let (impl_generics, _, where_clause) = imp.generics.split_for_impl();
    Ok(quote! {
        #imp

        impl #impl_generics #self_ty #where_clause {
            /// Every tool's declared access, collected by `#[scoped_tools]` from its
            /// `#[requires_scopes]` and `#[public_tool]` attributes (tools with neither are not
            /// listed: they need a token with the policy's base scopes). Feed it to
            /// `AccessPolicy::tools` so the layer enforces what the code declares.
            #[must_use]
            #[allow(unreachable_pub)]
            pub fn tool_requirements() -> &'static [#krate::__private::ToolRequirement] {
                const TOOLS: &[#krate::__private::ToolRequirement] = &[#(#entries),*];
                TOOLS
            }
        }
    })
}

/// Rewrites `#[tool(…)]` so the `Tool` it builds carries `_meta.securitySchemes` for
/// `access`: adds `meta = …`, or wraps the `meta = …` already there (its other keys are kept).
/// An attribute that does not parse as `key = value` items is left alone (`#[tool]` reports
/// it; the layer's fallback then adds the schemes to `tools/list`).
fn add_security_schemes(attr: &mut Attribute, krate: &syn::Path, access: &TokenStream) {
    let (path, mut metas) = match &attr.meta {
        Meta::Path(p) => (p.clone(), Punctuated::<Meta, Token![,]>::new()),
        Meta::List(list) => {
            let Ok(metas) = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            else {
                return;
            };
            (list.path.clone(), metas)
        }
        Meta::NameValue(_) => return,
    };
    let wrap = |existing: TokenStream| -> Expr {
        syn::parse_quote! {
            rmcp::model::MetaObject(#krate::__private::with_security_schemes(#existing, #access))
        }
    };
    let mut found = false;
    for m in &mut metas {
        if let Meta::NameValue(nv) = m
            && nv.path.is_ident("meta")
        {
            // darling reads a string literal as the expression it spells.
            let old = match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Str(s), ..
                }) => match s.parse::<Expr>() {
                    Ok(e) => e,
                    Err(_) => return,
                },
                other => other.clone(),
            };
            nv.value = wrap(quote! {
                ::core::option::Option::Some({
                    let __mcp_oauth_meta: rmcp::model::MetaObject = #old;
                    __mcp_oauth_meta.0
                })
            });
            found = true;
        }
    }
    if !found {
        let value = wrap(quote! { ::core::option::Option::None });
        metas.push(syn::parse_quote! { meta = #value });
    }
    attr.meta = Meta::List(syn::MetaList {
        path,
        delimiter: syn::MacroDelimiter::Paren(Default::default()),
        tokens: metas.to_token_stream(),
    });
}

/// The types of the method's parameters that may be mcp-oauth's `Auth`: those whose path
/// ends in a bare `Auth` (parentheses taken off; the expansion then tells, by the type
/// itself, whether it is).
fn auth_param_types(f: &ImplItemFn) -> Vec<Type> {
    let mut out = Vec::new();
    for arg in &f.sig.inputs {
        let FnArg::Typed(pat) = arg else { continue };
        let mut ty = &*pat.ty;
        while let Type::Paren(syn::TypeParen { elem, .. })
        | Type::Group(syn::TypeGroup { elem, .. }) = ty
        {
            ty = elem;
        }
        if let Type::Path(p) = ty
            && p.qself.is_none()
            && p.path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Auth" && s.arguments.is_none())
        {
            out.push(ty.clone());
        }
    }
    out
}

/// The scopes of a `#[requires_scopes(...)]` attribute, if it parses.
fn scopes_of(attr: &Attribute) -> Option<Vec<syn::LitStr>> {
    let Meta::List(list) = &attr.meta else {
        return None;
    };
    let args: ScopeArgs = syn::parse2(list.tokens.clone()).ok()?;
    (!args.scopes.is_empty()).then_some(args.scopes)
}

/// The tool name from `#[tool(name = "…")]`, as rmcp reads it.
fn tool_name(attr: &Attribute) -> Option<String> {
    let Meta::List(list) = &attr.meta else {
        return None;
    };
    let metas = list
        .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
        .ok()?;
    metas.iter().find_map(|m| match m {
        Meta::NameValue(nv) if nv.path.is_ident("name") => match &nv.value {
            Expr::Lit(e) => match &e.lit {
                Lit::Str(s) => Some(s.value()),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::{expand, expand_public_tool};
    use quote::quote;

    #[test]
    fn collects_tools() {
        let out = expand(
            quote!(),
            quote! {
                #[tool_router(server_handler)]
                impl Srv {
                    #[requires_scopes("files:read")]
                    #[tool(description = "read")]
                    async fn files_read(&self) -> Result<CallToolResult, ErrorData> { todo!() }
                    #[mcp_oauth::public_tool]
                    #[rmcp::tool(name = "search", annotations(read_only_hint = true))]
                    async fn public_search(&self) -> String { todo!() }
                    #[tool]
                    async fn plain(&self) -> String { todo!() }
                    fn helper(&self) {}
                }
            },
        )
        .unwrap()
        .to_string();
        assert!(out.contains("name : \"files_read\""), "{out}");
        assert!(
            out.contains("ToolAccess :: Scopes (& [\"files:read\"])"),
            "{out}"
        );
        assert!(out.contains("name : \"search\""), "{out}");
        assert!(out.contains("ToolAccess :: Public"), "{out}");
        assert!(!out.contains("\"plain\""), "{out}");
        assert!(out.contains("pub fn tool_requirements"), "{out}");
        // Declared tools carry their schemes in their own definitions; `meta` is added
        // next to the other keys, and an undeclared tool's attribute is left alone.
        assert!(
            out.contains(
                "# [tool (description = \"read\" , meta = rmcp :: model :: MetaObject (:: mcp_oauth :: __private :: with_security_schemes (:: core :: option :: Option :: None , :: mcp_oauth :: __private :: ToolAccess :: Scopes (& [\"files:read\"]))))]"
            ),
            "{out}"
        );
        assert!(
            out.contains("# [rmcp :: tool (name = \"search\" , annotations (read_only_hint = true) , meta = rmcp :: model :: MetaObject"),
            "{out}"
        );
        assert!(out.contains("# [tool] async fn plain"), "{out}");
    }

    #[test]
    fn checks_the_feature_for_auth_parameters() {
        let out = expand(
            quote!(),
            quote! {
                impl Srv {
                    #[tool]
                    async fn a(&self, auth: Auth, n: Parameters<N>) -> String { todo!() }
                    #[public_tool]
                    #[rmcp::tool]
                    async fn b(&self, auth: mcp_oauth::Auth) -> String { todo!() }
                    #[tool]
                    async fn c(&self, auth: Option<Auth>, m: MyAuth, g: Auth<u8>) -> String { todo!() }
                    fn not_a_tool(&self, auth: Auth) {}
                }
            },
        )
        .unwrap()
        .to_string();
        let checker = out
            .find("fn __mcp_oauth_auth_params_need_the_rmcp_feature ()")
            .unwrap_or_else(|| panic!("{out}"));
        // First in the impl block: before the tools (and `#[tool_router]`'s fn, added last).
        assert!(checker < out.find("async fn a").unwrap(), "{out}");
        let probe = |ty: &str| {
            format!(
                ":: mcp_oauth :: __private :: require_rmcp_feature ((& :: mcp_oauth :: __private :: ParamProbe :: < {ty} > :: new ()) . use_ () ,) ;"
            )
        };
        assert_eq!(out.matches(&probe("Auth")).count(), 1, "{out}");
        assert_eq!(out.matches(&probe("mcp_oauth :: Auth")).count(), 1, "{out}");
        // Only types whose path ends in a bare `Auth`, and only in tools.
        assert_eq!(out.matches("ParamProbe ::").count(), 2, "{out}");
        assert!(
            out.contains("use :: mcp_oauth :: __private :: { ProbeAuth as _ , ProbeOther as _ }"),
            "{out}"
        );

        let out = expand(
            quote!(crate = "::re::oauth"),
            quote! {
                impl Srv {
                    #[tool]
                    async fn a(&self, auth: (Auth)) -> String { todo!() }
                }
            },
        )
        .unwrap()
        .to_string();
        assert!(
            out.contains(":: re :: oauth :: __private :: ParamProbe :: < Auth >"),
            "{out}"
        );

        // No `Auth` parameter: nothing added.
        let out = expand(
            quote!(),
            quote! {
                impl Srv {
                    #[tool]
                    async fn a(&self, n: Parameters<N>) -> String { todo!() }
                }
            },
        )
        .unwrap()
        .to_string();
        assert!(!out.contains("__mcp_oauth_auth_params"), "{out}");
        assert!(!out.contains("require_rmcp_feature"), "{out}");
    }

    #[test]
    fn wraps_an_existing_meta() {
        let out = expand(
            quote!(),
            quote! {
                impl Srv {
                    #[public_tool]
                    #[tool(meta = my_meta())]
                    async fn a(&self) -> String { todo!() }
                    #[public_tool]
                    #[tool(meta = "my_meta()")]
                    async fn b(&self) -> String { todo!() }
                    #[public_tool]
                    #[tool]
                    async fn c(&self) -> String { todo!() }
                }
            },
        )
        .unwrap()
        .to_string();
        let wrapped = "with_security_schemes (:: core :: option :: Option :: Some ({ let __mcp_oauth_meta : rmcp :: model :: MetaObject = my_meta () ; __mcp_oauth_meta . 0 }) , :: mcp_oauth :: __private :: ToolAccess :: Public)";
        assert_eq!(out.matches(wrapped).count(), 2, "{out}");
        assert!(
            out.contains("# [tool (meta = rmcp :: model :: MetaObject"),
            "{out}"
        );
        assert_eq!(out.matches("meta =").count(), 3, "{out}");
    }

    #[test]
    fn rejects_wrong_places_and_args() {
        let e = expand(quote!(), quote!(impl Srv { fn a(&self) {} }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no #[tool] method"), "{e}");
        let e = expand(quote!(foo), quote!(impl Srv {}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("only takes `crate"), "{e}");
        let e = expand(quote!(), quote!(impl T for Srv {}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("trait impl"), "{e}");
        let e = expand_public_tool(
            quote!(x),
            quote!(
                async fn f() {}
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no arguments"), "{e}");
        let e = expand_public_tool(
            quote!(),
            quote!(
                #[requires_scopes("a")]
                async fn f() {}
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("both"), "{e}");
    }
}
