//! `#[sunray::remote]`: turns a plain function into a remote function of the cluster.
//!
//! ```text
//! #[sunray::remote(num_cpus = 1, max_retries = 3)]
//! fn add(a: i32, b: i32) -> i32 { a + b }
//! // add.remote(1, 2) -> ObjectRef<i32>; add::call(1, 2) runs it here.
//! ```
//!
//! The function becomes a unit struct of the same name with `remote`, `options` and
//! `call`, and is registered (by name, at link time) so that workers, which run the same
//! executable, find it.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{
    spanned::Spanned, Expr, FnArg, GenericArgument, ItemFn, Lit, Meta, Pat, PathArguments,
    ReturnType, Token, Type,
};

#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Defaults {
    num_cpus: Option<Expr>,
    num_gpus: Option<Expr>,
    memory: Option<Expr>,
    max_retries: Option<Expr>,
}

fn parse_defaults(attr: TokenStream2) -> syn::Result<Defaults> {
    let mut d = Defaults {
        num_cpus: None,
        num_gpus: None,
        memory: None,
        max_retries: None,
    };
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for m in metas {
        let Meta::NameValue(nv) = m else {
            return Err(syn::Error::new(
                m.span(),
                "expected `name = value` (num_cpus, num_gpus, memory, max_retries)",
            ));
        };
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let slot = match key.as_str() {
            "num_cpus" => &mut d.num_cpus,
            "num_gpus" => &mut d.num_gpus,
            "memory" => &mut d.memory,
            "max_retries" => &mut d.max_retries,
            _ => {
                return Err(syn::Error::new(
                    nv.path.span(),
                    "unknown option; use num_cpus, num_gpus, memory or max_retries",
                ))
            }
        };
        *slot = Some(nv.value);
    }
    Ok(d)
}

/// `Result<T, E>` (or an alias such as `anyhow::Result<T>`) gives `Some(T)`.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn as_f64(e: &Option<Expr>) -> TokenStream2 {
    match e {
        Some(e) => quote!(::core::option::Option::Some((#e) as f64)),
        None => quote!(::core::option::Option::None),
    }
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let defaults = parse_defaults(attr)?;
    let f: ItemFn = syn::parse2(item)?;
    let sig = &f.sig;
    if sig.asyncness.is_some() {
        return Err(syn::Error::new(
            sig.span(),
            "remote functions cannot be async",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "remote functions cannot be generic: workers find them by name",
        ));
    }
    let name = &sig.ident;
    let vis = &f.vis;
    let attrs = &f.attrs;
    let body = &f.block;
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new(
                input.span(),
                "remote functions take no self",
            ));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new(
                pt.pat.span(),
                "use a plain name for each argument",
            ));
        };
        if matches!(&*pt.ty, Type::Reference(_)) {
            return Err(syn::Error::new(
                pt.ty.span(),
                "arguments of remote functions must be owned (they are sent over the network)",
            ));
        }
        arg_names.push(pi.ident.clone());
        arg_types.push((*pt.ty).clone());
    }
    let (ret, output, fallible) = match &sig.output {
        ReturnType::Default => (quote!(()), quote!(()), false),
        ReturnType::Type(_, t) => match result_ok_type(t) {
            Some(ok) => (quote!(#t), quote!(#ok), true),
            None => (quote!(#t), quote!(#t), false),
        },
    };
    let opts_ty = format_ident!("__SunrayOptions_{}", name);
    let invoke = format_ident!("__sunray_invoke_{}", name);
    let n_args = arg_names.len();
    let idx: Vec<usize> = (0..n_args).collect();
    let arg_strs: Vec<String> = arg_names.iter().map(|i| i.to_string()).collect();
    let name_str = name.to_string();
    let encode_out = if fallible {
        quote! {
            match out {
                ::core::result::Result::Ok(v) => ::sunray::__private::encode_output(&v),
                ::core::result::Result::Err(e) => ::core::result::Result::Err((
                    ::sunray::__private::ErrorKind::Application,
                    ::std::format!("{:#}", e),
                )),
            }
        }
    } else {
        quote!(::sunray::__private::encode_output(&out))
    };
    let (cpus, gpus, mem) = (
        as_f64(&defaults.num_cpus),
        as_f64(&defaults.num_gpus),
        as_f64(&defaults.memory),
    );
    let retries = match &defaults.max_retries {
        Some(e) => quote!(::core::option::Option::Some((#e) as u32)),
        None => quote!(::core::option::Option::None),
    };
    let lit = Lit::Str(syn::LitStr::new(&name_str, Span::call_site()));
    Ok(quote! {
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #name;

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #opts_ty(::sunray::TaskOptions);

        impl #name {
            /// Registered name: module path and function name.
            pub const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", #lit);

            /// Runs the function here, in this process.
            #[allow(clippy::too_many_arguments)]
            pub fn call(#(#arg_names: #arg_types),*) -> #ret #body

            /// The function's default options (from the attribute).
            pub fn default_options() -> ::sunray::TaskOptions {
                ::sunray::TaskOptions::__from_attr(#cpus, #gpus, #mem, #retries)
            }

            /// Submits a call to the cluster; returns at once.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(&self, #(#arg_names: impl ::sunray::IntoArg<#arg_types>),*) -> ::sunray::ObjectRef<#output> {
                #opts_ty(Self::default_options()).remote(#(#arg_names),*)
            }

            /// Overrides resources or retries for the next call.
            pub fn options(&self, options: ::sunray::TaskOptions) -> #opts_ty {
                #opts_ty(Self::default_options().merged_with(options))
            }
        }

        impl #opts_ty {
            #[allow(clippy::too_many_arguments)]
            pub fn remote(self, #(#arg_names: impl ::sunray::IntoArg<#arg_types>),*) -> ::sunray::ObjectRef<#output> {
                let args = ::std::vec![#(::sunray::IntoArg::<#arg_types>::into_arg(#arg_names)),*];
                ::sunray::__private::submit(#name::NAME, args, &self.0)
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #invoke(args: &[::sunray::__private::Bytes]) -> ::core::result::Result<::sunray::__private::Bytes, (::sunray::__private::ErrorKind, ::std::string::String)> {
            if args.len() != #n_args {
                return ::core::result::Result::Err((
                    ::sunray::__private::ErrorKind::BadArguments,
                    ::std::format!("{} takes {} arguments, got {}", #name::NAME, #n_args, args.len()),
                ));
            }
            #(let #arg_names: #arg_types = ::sunray::__private::decode_arg(&args[#idx], #arg_strs)?;)*
            let out = #name::call(#(#arg_names),*);
            #encode_out
        }

        ::sunray::__private::inventory::submit! {
            ::sunray::__private::RemoteFunction {
                name: #name::NAME,
                invoke: #invoke,
            }
        }
    })
}
