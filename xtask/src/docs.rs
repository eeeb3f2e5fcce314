//! `cargo xtask docs`: writes `docs/configuration.md` from the config structs in
//! `proxy/crates/config/src/file.rs`, as rust-analyzer generates its configuration docs from its
//! config's doc comments. The page is the `Config` struct's doc comment, then one part per
//! `[section]` (a field of `Config`): the section struct's doc comment, a table of its keys, and
//! per key its type, default, environment variable and doc comment.
//!
//! The source is parsed with `syn`, not compiled: defaults come from the `impl Default` blocks,
//! whose field values are evaluated here (literals, `*` and `+` of integers, the file's `const`s,
//! `.into()`, `String::new()`, `Vec::new()`, `vec![...]` and enum variants renamed as serde renames
//! them). Anything else is an error naming the field, never a guessed default, and so is a key or
//! section without a doc comment. The tidy test `configuration_reference_is_generated` fails when
//! `docs/configuration.md` is not what this makes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use syn::{Attribute, Expr, Fields, GenericArgument, Item, ItemEnum, ItemStruct, Lit, PathArguments, Type};

/// The file the reference is generated from, relative to the workspace root.
pub(crate) const CONFIG_SOURCE: &str = "proxy/crates/config/src/file.rs";
/// The generated reference, relative to the workspace root.
pub(crate) const CONFIG_DOC: &str = "docs/configuration.md";
/// The environment variable prefix (`proxy/crates/config/src/env.rs`).
const ENV_PREFIX: &str = "PORTCULLIS_";

pub(crate) fn docs(root: &Path) -> Result<()> {
    let text = configuration_md(root)?;
    let path = root.join(CONFIG_DOC);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old == text {
        eprintln!("xtask: {CONFIG_DOC} is up to date");
    } else {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote {CONFIG_DOC}");
    }
    Ok(())
}

/// What `cargo xtask docs` writes to `docs/configuration.md`.
pub(crate) fn configuration_md(root: &Path) -> Result<String> {
    let path = root.join(CONFIG_SOURCE);
    let src = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    render(&src).with_context(|| format!("generating {CONFIG_DOC} from {CONFIG_SOURCE}"))
}

/// A default value as TOML shows it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    List(Vec<Value>),
    /// `None`: an optional key left out.
    Unset,
}

impl Value {
    fn toml(&self) -> String {
        match self {
            Value::Str(s) => {
                let mut out = String::from("\"");
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c => out.push(c),
                    }
                }
                out.push('"');
                out
            }
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::List(items) => format!("[{}]", items.iter().map(Value::toml).collect::<Vec<_>>().join(", ")),
            Value::Unset => "(unset)".into(),
        }
    }
}

/// The parsed file: its structs, enums, constants and `impl Default` field values.
struct Source<'a> {
    structs: HashMap<String, &'a ItemStruct>,
    enums: HashMap<String, &'a ItemEnum>,
    consts: HashMap<String, &'a Expr>,
    defaults: HashMap<String, HashMap<String, &'a Expr>>,
}

impl<'a> Source<'a> {
    fn new(file: &'a syn::File) -> Result<Self> {
        let mut s =
            Source { structs: HashMap::new(), enums: HashMap::new(), consts: HashMap::new(), defaults: HashMap::new() };
        for item in &file.items {
            match item {
                Item::Struct(i) => {
                    s.structs.insert(i.ident.to_string(), i);
                }
                Item::Enum(i) => {
                    s.enums.insert(i.ident.to_string(), i);
                }
                Item::Const(i) => {
                    s.consts.insert(i.ident.to_string(), &i.expr);
                }
                Item::Impl(i) => {
                    let is_default = i
                        .trait_
                        .as_ref()
                        .is_some_and(|(_, p, _)| p.segments.last().is_some_and(|s| s.ident == "Default"));
                    let Type::Path(self_ty) = &*i.self_ty else { continue };
                    let (true, Some(name)) = (is_default, self_ty.path.segments.last()) else { continue };
                    let name = name.ident.to_string();
                    let Some(syn::ImplItem::Fn(f)) = i.items.first() else {
                        bail!("impl Default for {name}: expected `fn default`");
                    };
                    let Some(syn::Stmt::Expr(Expr::Struct(lit), None)) = f.block.stmts.last() else {
                        bail!("impl Default for {name}: `default` must end in a struct literal (`{name} {{ .. }}`)");
                    };
                    let mut fields = HashMap::new();
                    for fv in &lit.fields {
                        let syn::Member::Named(id) = &fv.member else {
                            bail!("impl Default for {name}: unnamed field")
                        };
                        fields.insert(id.to_string(), &fv.expr);
                    }
                    s.defaults.insert(name, fields);
                }
                _ => {}
            }
        }
        Ok(s)
    }

    fn eval(&self, e: &Expr) -> Result<Value> {
        Ok(match e {
            Expr::Lit(l) => match &l.lit {
                Lit::Str(s) => Value::Str(s.value()),
                Lit::Int(i) => Value::Int(i.base10_parse()?),
                Lit::Float(f) => Value::Float(f.base10_parse()?),
                Lit::Bool(b) => Value::Bool(b.value),
                _ => bail!("unsupported literal"),
            },
            Expr::Paren(p) => self.eval(&p.expr)?,
            Expr::Group(g) => self.eval(&g.expr)?,
            Expr::Binary(b) => {
                let (Value::Int(l), Value::Int(r)) = (self.eval(&b.left)?, self.eval(&b.right)?) else {
                    bail!("arithmetic on something other than integers");
                };
                match b.op {
                    syn::BinOp::Mul(_) => Value::Int(l.checked_mul(r).ok_or_else(|| anyhow!("overflow"))?),
                    syn::BinOp::Add(_) => Value::Int(l.checked_add(r).ok_or_else(|| anyhow!("overflow"))?),
                    _ => bail!("unsupported operator"),
                }
            }
            Expr::MethodCall(m)
                if m.args.is_empty() && ["into", "to_string", "to_owned"].contains(&&*m.method.to_string()) =>
            {
                self.eval(&m.receiver)?
            }
            Expr::Call(c) if c.args.is_empty() => {
                let Expr::Path(p) = &*c.func else { bail!("unsupported call") };
                match path_string(&p.path).as_str() {
                    "String::new" | "PathBuf::new" => Value::Str(String::new()),
                    "Vec::new" => Value::List(Vec::new()),
                    other => bail!("unsupported call `{other}()`"),
                }
            }
            Expr::Macro(m) if m.mac.path.is_ident("vec") => {
                let items =
                    m.mac.parse_body_with(syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated)?;
                Value::List(items.iter().map(|e| self.eval(e)).collect::<Result<_>>()?)
            }
            Expr::Path(p) => {
                let segs: Vec<String> = p.path.segments.iter().map(|s| s.ident.to_string()).collect();
                match segs.as_slice() {
                    [none] if none == "None" => Value::Unset,
                    [name] => {
                        let c = self.consts.get(name).ok_or_else(|| anyhow!("unknown constant `{name}`"))?;
                        self.eval(c).with_context(|| format!("constant `{name}`"))?
                    }
                    [ty, variant] => {
                        let en = self.enums.get(ty).ok_or_else(|| anyhow!("unknown enum `{ty}`"))?;
                        Value::Str(serde_name(en, variant)?)
                    }
                    _ => bail!("unsupported path `{}`", segs.join("::")),
                }
            }
            _ => bail!("unsupported expression"),
        })
    }

    /// The default of `field` in struct `ty`: from its `impl Default`, or for a struct that
    /// derives `Default`, the default of the field's type (a section struct or an enum).
    fn default_of(&self, ty: &str, field: &syn::Field) -> Result<Value> {
        let name = field.ident.as_ref().map(ToString::to_string).unwrap_or_default();
        if let Some(e) = self.defaults.get(ty).and_then(|f| f.get(&name)) {
            return self.eval(e).with_context(|| format!("the default of `{ty}.{name}`: `{}`", tokens(*e)));
        }
        if let Some(en) = type_ident(&field.ty).and_then(|t| self.enums.get(&t)) {
            if !self.defaults.contains_key(ty) {
                let v = en
                    .variants
                    .iter()
                    .find(|v| v.attrs.iter().any(|a| a.path().is_ident("default")))
                    .ok_or_else(|| anyhow!("enum `{}` has no #[default] variant", en.ident))?;
                return Ok(Value::Str(serde_name(en, &v.ident.to_string())?));
            }
        }
        bail!("no default for `{ty}.{name}` (expected `impl Default for {ty}` setting it)")
    }

    /// How the type of a key reads in the reference.
    fn type_name(&self, ty: &Type) -> Result<String> {
        let Type::Path(p) = ty else { bail!("unsupported type `{}`", tokens(ty)) };
        let seg = p.path.segments.last().ok_or_else(|| anyhow!("empty type path"))?;
        Ok(match seg.ident.to_string().as_str() {
            "String" | "PathBuf" => "string".into(),
            "bool" => "boolean".into(),
            "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "integer".into(),
            "f32" | "f64" => "number".into(),
            "Option" => {
                let PathArguments::AngleBracketed(args) = &seg.arguments else { bail!("`Option` without its type") };
                let Some(GenericArgument::Type(inner)) = args.args.first() else { bail!("`Option` without its type") };
                format!("{} (optional)", self.type_name(inner)?)
            }
            "Vec" => {
                let PathArguments::AngleBracketed(args) = &seg.arguments else { bail!("`Vec` without its item type") };
                let Some(GenericArgument::Type(item)) = args.args.first() else { bail!("`Vec` without its item type") };
                if type_ident(item).is_some_and(|t| self.structs.contains_key(&t)) {
                    return Ok("list of tables (keys below)".into());
                }
                let item = self.type_name(item)?;
                format!("list of {item}s")
            }
            other => match self.enums.get(other) {
                Some(en) => {
                    let names = en
                        .variants
                        .iter()
                        .map(|v| serde_name(en, &v.ident.to_string()).map(|n| format!("`\"{n}\"`")))
                        .collect::<Result<Vec<_>>>()?;
                    format!("one of {}", names.join(", "))
                }
                None => bail!("unsupported type `{other}`"),
            },
        })
    }

    /// The struct of a field whose type is a struct of the file (a table inside a section).
    fn sub_table(&self, ty: Option<&Type>) -> Option<&'a ItemStruct> {
        self.structs.get(&type_ident(ty?)?).copied()
    }

    /// The struct of a `Vec<Struct>` field `key` of `st` (an array of tables).
    fn table_item(&self, st: &ItemStruct, key: &str) -> Option<&'a ItemStruct> {
        let f = named_fields(st).ok()?.iter().find(|f| f.ident.as_ref().is_some_and(|i| i == key))?;
        let Type::Path(p) = &f.ty else { return None };
        let seg = p.path.segments.last().filter(|s| s.ident == "Vec")?;
        let PathArguments::AngleBracketed(args) = &seg.arguments else { return None };
        let Some(GenericArgument::Type(item)) = args.args.first() else { return None };
        self.structs.get(&type_ident(item)?).copied()
    }

    /// Rewrites rustdoc links to constants of the file (``[`MAX_WORKERS`]``) to their values, and
    /// other rustdoc links to plain code spans.
    fn resolve_links(&self, doc: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = doc;
        while let Some(start) = rest.find("[`") {
            let Some(len) = rest[start + 2..].find("`]") else { break };
            let name = &rest[start + 2..start + 2 + len];
            out.push_str(&rest[..start]);
            match self.consts.get(name) {
                Some(c) => out.push_str(&self.eval(c).with_context(|| format!("constant `{name}`"))?.toml()),
                None => write!(out, "`{name}`").unwrap(),
            }
            rest = &rest[start + 2 + len + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn path_string(p: &syn::Path) -> String {
    p.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}

fn tokens(t: &impl quote::ToTokens) -> String {
    t.to_token_stream().to_string()
}

fn type_ident(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// The doc comment of an item or field: `///` lines with the one leading space removed.
fn doc(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for a in attrs {
        if let syn::Meta::NameValue(nv) = &a.meta {
            if nv.path.is_ident("doc") {
                if let Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) = &nv.value {
                    let v = s.value();
                    lines.push(v.strip_prefix(' ').unwrap_or(&v).trim_end().to_string());
                }
            }
        }
    }
    lines.join("\n").trim().to_string()
}

/// A variant's name as serde writes it (`#[serde(rename_all = "lowercase")]` on the enum).
fn serde_name(en: &ItemEnum, variant: &str) -> Result<String> {
    if !en.variants.iter().any(|v| v.ident == variant) {
        bail!("enum `{}` has no variant `{variant}`", en.ident);
    }
    let mut rule = None;
    for a in en.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        a.parse_nested_meta(|m| {
            if m.path.is_ident("rename_all") {
                rule = Some(m.value()?.parse::<syn::LitStr>()?.value());
            } else if m.input.peek(syn::Token![=]) {
                m.value()?.parse::<Expr>()?;
            }
            Ok(())
        })?;
    }
    Ok(match rule.as_deref() {
        Some("lowercase") => variant.to_lowercase(),
        Some("snake_case") => {
            let mut s = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    s.push('_');
                }
                s.extend(c.to_lowercase());
            }
            s
        }
        None => variant.to_string(),
        Some(other) => bail!("enum `{}`: rename_all = \"{other}\" is not supported here", en.ident),
    })
}

/// Fails on field attributes that would change the key's name in the file.
fn check_field_attrs(section: &str, field: &syn::Field) -> Result<()> {
    match field.attrs.iter().find(|a| a.path().is_ident("serde")) {
        Some(a) => {
            bail!("`{section}.{}`: #[{}] is not supported by the generator", tokens(&field.ident), tokens(&a.meta))
        }
        None => Ok(()),
    }
}

fn named_fields(s: &ItemStruct) -> Result<&syn::punctuated::Punctuated<syn::Field, syn::Token![,]>> {
    match &s.fields {
        Fields::Named(f) => Ok(&f.named),
        _ => bail!("struct `{}` must have named fields", s.ident),
    }
}

/// One line of a table cell: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

fn render(src: &str) -> Result<String> {
    let file = syn::parse_file(src).context("parsing")?;
    let source = Source::new(&file)?;
    let config = source.structs.get("Config").ok_or_else(|| anyhow!("no `struct Config`"))?;
    let intro = source.resolve_links(&doc(&config.attrs))?;
    if intro.is_empty() {
        bail!("`Config` has no doc comment (the page's introduction)");
    }

    let mut out = String::new();
    writeln!(out, "<!-- Generated by `cargo xtask docs` from the doc comments in `{CONFIG_SOURCE}`: edit those, not this file. -->").unwrap();
    writeln!(out, "# Configuration reference\n\n{intro}\n").unwrap();

    let sections = named_fields(config)?;
    writeln!(out, "Sections:\n").unwrap();
    let mut parts = Vec::new();
    for sec in sections {
        let name = sec.ident.as_ref().unwrap().to_string();
        check_field_attrs("Config", sec)?;
        let ty = type_ident(&sec.ty).ok_or_else(|| anyhow!("section `{name}`: unsupported type"))?;
        let st = source.structs.get(&ty).ok_or_else(|| anyhow!("section `{name}`: no `struct {ty}` in the file"))?;
        let sdoc = source.resolve_links(&doc(&st.attrs))?;
        // "`[proxy]`: the data plane." -> summary "the data plane."; the heading names the section.
        let prefix = format!("`[{name}]`");
        let body = sdoc.strip_prefix(&prefix).map(|r| r.trim_start_matches([':', '.']).trim_start()).unwrap_or(&sdoc);
        if body.is_empty() {
            bail!("`{ty}` (section `[{name}]`) has no doc comment");
        }
        let mut chars = body.chars();
        let body: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
        let summary = body.split("\n\n").next().unwrap_or_default().replace('\n', " ");
        writeln!(out, "- [`[{name}]`](#{name}): {summary}").unwrap();
        parts.push((name, ty, st, body));
    }
    out.push('\n');

    for (name, ty, st, body) in parts {
        writeln!(out, "## `[{name}]`\n\n{body}\n").unwrap();
        let mut keys = Vec::new();
        let mut subtables = Vec::new();
        for f in named_fields(st)? {
            let key = f.ident.as_ref().unwrap().to_string();
            check_field_attrs(&name, f)?;
            if let Some(sub) = source.sub_table(Some(&f.ty)) {
                subtables.push((key, sub));
                continue;
            }
            let fdoc = source.resolve_links(&doc(&f.attrs))?;
            if fdoc.is_empty() {
                bail!("`{ty}.{key}` (`{name}.{key}`) has no doc comment");
            }
            let default = source.default_of(&ty, f)?;
            let tname = source.type_name(&f.ty).with_context(|| format!("the type of `{ty}.{key}`"))?;
            let variants = type_ident(&f.ty).and_then(|t| source.enums.get(&t).copied());
            keys.push((key, tname, default, fdoc, variants));
        }
        if keys.is_empty() {
            bail!("section `[{name}]` has no keys");
        }
        writeln!(out, "| key | type | default |\n|---|---|---|").unwrap();
        for (key, tname, default, _, _) in &keys {
            writeln!(out, "| [`{key}`](#{name}{key}) | {} | `{}` |", cell(tname), cell(&default.toml())).unwrap();
        }
        out.push('\n');
        let mut tables = Vec::new();
        for (key, tname, default, fdoc, variants) in keys {
            let env = format!("{ENV_PREFIX}{}_{}", name.to_uppercase(), key.to_uppercase());
            writeln!(out, "### `{name}.{key}`\n").unwrap();
            if let Some(item) = source.table_item(st, &key) {
                writeln!(out, "Type: {tname}. Default: `{}`.\n", default.toml()).unwrap();
                writeln!(out, "{fdoc}\n").unwrap();
                tables.push((key, item));
                continue;
            }
            writeln!(out, "Type: {tname}. Default: `{}`. Environment: `{env}`.\n", default.toml()).unwrap();
            writeln!(out, "{fdoc}\n").unwrap();
            if let Some(en) = variants {
                let documented: Vec<_> = en.variants.iter().map(|v| (v, doc(&v.attrs))).collect();
                if documented.iter().all(|(_, d)| !d.is_empty()) {
                    for (v, d) in documented {
                        let d = source.resolve_links(&d)?.replace('\n', " ");
                        writeln!(out, "- `\"{}\"`: {d}", serde_name(en, &v.ident.to_string())?).unwrap();
                    }
                    out.push('\n');
                }
            }
        }
        for (key, item) in tables {
            render_table(&source, &mut out, &name, &key, item)?;
        }
        for (key, item) in subtables {
            render_subtable(&source, &mut out, &name, &key, item)?;
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    Ok(link_docs(&out))
}

/// The keys of a table inside a section (`[tls.acme]`), each with its environment variable
/// (`PORTCULLIS_TLS_ACME_ENABLED`).
fn render_subtable(source: &Source<'_>, out: &mut String, section: &str, key: &str, st: &ItemStruct) -> Result<()> {
    let ty = st.ident.to_string();
    let tdoc = source.resolve_links(&doc(&st.attrs))?;
    let prefix = format!("`[{section}.{key}]`");
    let body = tdoc.strip_prefix(&prefix).map(|r| r.trim_start_matches([':', '.']).trim_start()).unwrap_or(&tdoc);
    if body.is_empty() {
        bail!("`{ty}` (`[{section}.{key}]`) has no doc comment");
    }
    let mut chars = body.chars();
    let body: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
    writeln!(out, "### `[{section}.{key}]`\n\n{body}\n").unwrap();
    writeln!(out, "| key | type | default | environment | |\n|---|---|---|---|---|").unwrap();
    for f in named_fields(st)? {
        let k = f.ident.as_ref().unwrap().to_string();
        check_field_attrs(&format!("{section}.{key}"), f)?;
        let fdoc = source.resolve_links(&doc(&f.attrs))?;
        if fdoc.is_empty() {
            bail!("`{ty}.{k}` has no doc comment");
        }
        let default = source.default_of(&ty, f)?;
        let tname = source.type_name(&f.ty).with_context(|| format!("the type of `{ty}.{k}`"))?;
        let env = format!("{ENV_PREFIX}{}_{}_{}", section.to_uppercase(), key.to_uppercase(), k.to_uppercase());
        writeln!(out, "| `{k}` | {} | `{}` | `{env}` | {} |", cell(&tname), cell(&default.toml()), cell(&fdoc))
            .unwrap();
    }
    out.push('\n');
    Ok(())
}

/// The keys of one table of an array of tables (`[[analytics.sinks]]`): no environment
/// overrides (a list of tables has none).
fn render_table(source: &Source<'_>, out: &mut String, section: &str, key: &str, st: &ItemStruct) -> Result<()> {
    let ty = st.ident.to_string();
    let tdoc = source.resolve_links(&doc(&st.attrs))?;
    let prefix = format!("`[[{section}.{key}]]`");
    let body = tdoc.strip_prefix(&prefix).map(|r| r.trim_start_matches([':', '.']).trim_start()).unwrap_or(&tdoc);
    if body.is_empty() {
        bail!("`{ty}` (`[[{section}.{key}]]`) has no doc comment");
    }
    writeln!(out, "### `[[{section}.{key}]]`\n\n{body}\n").unwrap();
    writeln!(out, "| key | type | default | |\n|---|---|---|---|").unwrap();
    for f in named_fields(st)? {
        let k = f.ident.as_ref().unwrap().to_string();
        check_field_attrs(&format!("{section}.{key}"), f)?;
        let fdoc = source.resolve_links(&doc(&f.attrs))?;
        if fdoc.is_empty() {
            bail!("`{ty}.{k}` has no doc comment");
        }
        let default = source.default_of(&ty, f)?;
        let tname = source.type_name(&f.ty).with_context(|| format!("the type of `{ty}.{k}`"))?;
        let mut text = fdoc.replace('\n', " ");
        if let Some(en) = type_ident(&f.ty).and_then(|t| source.enums.get(&t).copied()) {
            for v in &en.variants {
                let d = source.resolve_links(&doc(&v.attrs))?.replace('\n', " ");
                write!(text, "<br>`\"{}\"`: {d}", serde_name(en, &v.ident.to_string())?).unwrap();
            }
        }
        writeln!(out, "| `{k}` | {} | `{}` | {} |", cell(&tname), cell(&default.toml()), cell(&text)).unwrap();
    }
    out.push('\n');
    Ok(())
}

/// Turns the doc comments' mentions of other pages under `docs/` (docs/admin-api.md,
/// docs/decisions/0011-upstream-connection-cap.md) into links relative to `docs/`; not inside
/// code spans.
fn link_docs(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("docs/") {
        let after = &rest[i + 5..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '/' || c == '.'))
            .unwrap_or(after.len());
        let name = after[..len].trim_end_matches('.');
        let boundary =
            i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '[' || c == '`');
        if boundary && name.ends_with(".md") && name.len() > 3 {
            out.push_str(&rest[..i]);
            write!(out, "[{name}]({name})").unwrap();
            rest = &after[name.len()..];
        } else {
            out.push_str(&rest[..i + 5]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
        /// The file.
        ///
        /// Second paragraph.
        #[derive(Default)]
        pub struct Config {
            pub main: MainConfig,
        }

        /// `[main]`: the main part.
        ///
        /// More about it.
        pub struct MainConfig {
            /// Where, at most [`MOST`] of them.
            pub listen: String,
            /// How many.
            ///
            /// A second paragraph.
            pub size: usize,
            /// Ratio (docs/x.md): docs/x.md, docs/decisions/0002-y.md, `docs/z.md`.
            pub burst: f64,
            /// Mode.
            pub mode: Mode,
            /// Ports.
            pub ports: Vec<u16>,
            /// On.
            pub on: bool,
        }

        pub const MOST: usize = 4 * 256;

        /// `[main] mode`.
        #[derive(Default)]
        #[serde(rename_all = "lowercase")]
        pub enum Mode {
            /// Picks.
            #[default]
            Auto,
            /// Never.
            Off,
        }

        impl Default for MainConfig {
            fn default() -> Self {
                MainConfig {
                    listen: "0.0.0.0:1".into(),
                    size: 64 * 1024 + MOST,
                    burst: 1.0,
                    mode: Mode::Off,
                    ports: vec![80, 443],
                    on: true,
                }
            }
        }
    "#;

    #[test]
    fn renders_sections_keys_defaults_and_docs() {
        let md = render(SRC).unwrap();
        assert!(md.contains("# Configuration reference\n\nThe file.\n\nSecond paragraph.\n"), "{md}");
        assert!(md.contains("- [`[main]`](#main): The main part.\n"), "{md}");
        assert!(md.contains("## `[main]`\n\nThe main part.\n\nMore about it.\n"), "{md}");
        assert!(
            md.contains("Ratio ([x.md](x.md)): [x.md](x.md), [decisions/0002-y.md](decisions/0002-y.md), `docs/z.md`."),
            "{md}"
        );
        assert!(md.contains("| [`size`](#mainsize) | integer | `66560` |"), "{md}");
        assert!(md.contains("| [`burst`](#mainburst) | number | `1.0` |"), "{md}");
        assert!(md.contains("| [`mode`](#mainmode) | one of `\"auto\"`, `\"off\"` | `\"off\"` |"), "{md}");
        assert!(md.contains("| [`ports`](#mainports) | list of integers | `[80, 443]` |"), "{md}");
        assert!(md.contains("Type: string. Default: `\"0.0.0.0:1\"`. Environment: `PORTCULLIS_MAIN_LISTEN`."), "{md}");
        assert!(md.contains("Where, at most 1024 of them."), "{md}");
        assert!(md.contains("How many.\n\nA second paragraph.\n"), "{md}");
        assert!(md.contains("- `\"auto\"`: Picks.\n- `\"off\"`: Never.\n"), "{md}");
        assert!(!md.ends_with("\n\n") && md.ends_with('\n'), "{md:?}");
    }

    #[test]
    fn an_undocumented_key_or_an_unknown_default_is_an_error() {
        let undocumented = SRC.replace("/// On.\n", "");
        let e = format!("{:#}", render(&undocumented).unwrap_err());
        assert!(e.contains("`MainConfig.on`") && e.contains("no doc comment"), "{e}");
        let unknown = SRC.replace("on: true,", "on: cfg!(test),");
        let e = format!("{:#}", render(&unknown).unwrap_err());
        assert!(e.contains("the default of `MainConfig.on`"), "{e}");
        let missing = SRC.replace("on: true,", "");
        let e = format!("{:#}", render(&missing).unwrap_err());
        assert!(e.contains("no default for `MainConfig.on`"), "{e}");
    }
}
