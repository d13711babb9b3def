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
//!
//! `#[sunray::actor]` on an `impl` block makes the struct an actor: `new` is its
//! constructor (`Counter::remote(args)` starts one on the cluster and returns an
//! `ActorHandle<Counter>`), and each method taking `&self` or `&mut self` can be called
//! through the handle (`handle.incr(1).remote()` returns an `ObjectRef`).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{
    spanned::Spanned, Expr, FnArg, GenericArgument, ImplItem, ItemFn, ItemImpl, Lit, Meta, Pat,
    PathArguments, ReturnType, Signature, Token, Type,
};

#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_actor(attr.into(), item.into()) {
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

/// The names and types of a function's arguments after its receiver, if any (owned
/// values with plain names: they travel over the network).
fn typed_args(sig: &Signature) -> syn::Result<(Vec<syn::Ident>, Vec<Type>)> {
    let mut names = Vec::new();
    let mut types = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(pt) = input else {
            continue;
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
                "arguments of remote functions and actor methods must be owned (they are sent over the network)",
            ));
        }
        names.push(pi.ident.clone());
        types.push((*pt.ty).clone());
    }
    Ok((names, types))
}

/// Checks the argument count, then decodes each argument into its typed variable
/// (`what` names the callee in the error).
fn decode_args(what: TokenStream2, names: &[syn::Ident], types: &[Type]) -> TokenStream2 {
    let n = names.len();
    let idx: Vec<usize> = (0..n).collect();
    let strs: Vec<String> = names.iter().map(|i| i.to_string()).collect();
    quote! {
        if args.len() != #n {
            return ::core::result::Result::Err((
                ::sunray::__private::ErrorKind::BadArguments,
                ::std::format!("{} takes {} arguments, got {}", #what, #n, args.len()),
            ));
        }
        #(let #names: #types = ::sunray::__private::decode_arg(&args[#idx], #strs)?;)*
    }
}

/// The type a call returns (`T` for `T` and for `Result<T, E>`), and the encoding of
/// its value `out` into the result bytes (an `Err` becomes the task's error).
fn output_of(sig: &Signature) -> (TokenStream2, TokenStream2) {
    let (output, fallible) = match &sig.output {
        ReturnType::Default => (quote!(()), false),
        ReturnType::Type(_, t) => match result_ok_type(t) {
            Some(ok) => (quote!(#ok), true),
            None => (quote!(#t), false),
        },
    };
    let encode = if fallible {
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
    (output, encode)
}

fn expand_actor(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "#[sunray::actor] takes no options: give them at creation with Counter::options(ActorOptions)",
        ));
    }
    let imp: ItemImpl = syn::parse2(item)?;
    if !imp.generics.params.is_empty() || imp.trait_.is_some() {
        return Err(syn::Error::new(
            imp.span(),
            "#[sunray::actor] goes on the plain `impl` of a non-generic struct (workers find it by name)",
        ));
    }
    let ty = &imp.self_ty;
    let Type::Path(tp) = &**ty else {
        return Err(syn::Error::new(ty.span(), "expected a struct name"));
    };
    let ident = tp
        .path
        .segments
        .last()
        .map(|s| s.ident.clone())
        .ok_or_else(|| syn::Error::new(ty.span(), "expected a struct name"))?;
    let class_str = ident.to_string();
    let methods_ty = format_ident!("__Sunray{}Methods", ident);
    let new_ty = format_ident!("__Sunray{}New", ident);
    let new_fn = format_ident!("__sunray_actor_new_{}", ident);
    let call_fn = format_ident!("__sunray_actor_call_{}", ident);
    let mut ctor = None;
    let mut methods = Vec::new();
    for it in &imp.items {
        let ImplItem::Fn(f) = it else { continue };
        let sig = &f.sig;
        if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
            continue;
        }
        match sig.inputs.first() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() => methods.push(sig.clone()),
            Some(FnArg::Receiver(_)) => {}
            _ if sig.ident == "new" => ctor = Some(sig.clone()),
            _ => {}
        }
    }
    let ctor = ctor.ok_or_else(|| {
        syn::Error::new(
            imp.span(),
            "an actor needs a constructor `fn new(...) -> Self` in this impl block",
        )
    })?;
    let (c_names, c_types) = typed_args(&ctor)?;
    let ctor_name = format!("{class_str}::new");
    let c_decode = decode_args(quote!(#ctor_name), &c_names, &c_types);

    let mut remote_methods = Vec::new();
    let mut arms = Vec::new();
    for m in &methods {
        let name = &m.ident;
        let name_str = name.to_string();
        let (names, types) = typed_args(m)?;
        let (output, encode) = output_of(m);
        let lit = Lit::Str(syn::LitStr::new(&name_str, Span::call_site()));
        remote_methods.push(quote! {
            /// Calls the method on the actor: `.remote()` submits it.
            #[allow(clippy::too_many_arguments)]
            pub fn #name(&self, #(#names: impl ::sunray::IntoArg<#types>),*) -> ::sunray::ActorCall<#output> {
                let args = ::std::vec![#(::sunray::IntoArg::<#types>::into_arg(#names)),*];
                ::sunray::ActorCall::__new(
                    self.0,
                    ::core::concat!(::core::module_path!(), "::", #class_str, "::", #lit),
                    args,
                )
            }
        });
        let decode = decode_args(quote!(#lit), &names, &types);
        arms.push(quote! {
            #lit => {
                #decode
                let out = this.#name(#(#names),*);
                #encode
            }
        });
    }
    Ok(quote! {
        #imp

        impl ::sunray::Actor for #ident {
            const CLASS: &'static str = ::core::concat!(::core::module_path!(), "::", #class_str);
            type Methods = #methods_ty;
        }

        /// The remote methods of the actor (what its handle derefs to).
        #[doc(hidden)]
        #[derive(Clone, Copy, Debug)]
        pub struct #methods_ty(::sunray::__private::ActorId);

        impl ::core::convert::From<::sunray::__private::ActorId> for #methods_ty {
            fn from(id: ::sunray::__private::ActorId) -> Self {
                #methods_ty(id)
            }
        }

        impl #methods_ty {
            #(#remote_methods)*
        }

        #[doc(hidden)]
        pub struct #new_ty(::sunray::ActorOptions);

        impl #new_ty {
            /// Starts the actor with these options.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(self, #(#c_names: impl ::sunray::IntoArg<#c_types>),*) -> ::sunray::ActorHandle<#ident> {
                let args = ::std::vec![#(::sunray::IntoArg::<#c_types>::into_arg(#c_names)),*];
                ::sunray::__private::create_actor::<#ident>(args, &self.0)
            }
        }

        impl #ident {
            /// Starts the actor on the cluster (its constructor runs there); returns at once.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(#(#c_names: impl ::sunray::IntoArg<#c_types>),*) -> ::sunray::ActorHandle<#ident> {
                #new_ty(::sunray::ActorOptions::default()).remote(#(#c_names),*)
            }

            /// Resources, name, lifetime and restarts for the actor about to start.
            pub fn options(options: ::sunray::ActorOptions) -> #new_ty {
                #new_ty(options)
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #new_fn(args: &[::sunray::__private::Bytes]) -> ::core::result::Result<::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send>, (::sunray::__private::ErrorKind, ::std::string::String)> {
            #c_decode
            ::core::result::Result::Ok(::std::boxed::Box::new(#ident::new(#(#c_names),*)))
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #call_fn(obj: &mut (dyn ::core::any::Any + ::core::marker::Send), method: &str, args: &[::sunray::__private::Bytes]) -> ::sunray::__private::InvokeResult {
            let this = obj
                .downcast_mut::<#ident>()
                .expect("a worker serves one actor, of the class it was created for");
            match method {
                #(#arms)*
                other => ::core::result::Result::Err((
                    ::sunray::__private::ErrorKind::FunctionNotFound,
                    ::std::format!("actor {} has no method `{}`", #class_str, other),
                )),
            }
        }

        ::sunray::__private::inventory::submit! {
            ::sunray::__private::ActorClass {
                name: <#ident as ::sunray::Actor>::CLASS,
                new: #new_fn,
                call: #call_fn,
            }
        }
    })
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
    if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
        return Err(syn::Error::new(r.span(), "remote functions take no self"));
    }
    let (arg_names, arg_types) = typed_args(sig)?;
    let ret = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let (output, encode_out) = output_of(sig);
    let decode = decode_args(quote!(#name::NAME), &arg_names, &arg_types);
    let opts_ty = format_ident!("__SunrayOptions_{}", name);
    let invoke = format_ident!("__sunray_invoke_{}", name);
    let name_str = name.to_string();
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
            #decode
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
