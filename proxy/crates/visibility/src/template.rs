//! Path templates learned from observed paths: a segment trie per API, where segments that vary
//! (numbers, UUIDs, hashes, opaque ids, dates, e-mails, or literal siblings too many to be
//! constants) become one parameter child, named after its parent (`/users/42` →
//! `/users/{userId}`). Each template's leaf carries the caller's payload (`T`), merged when a
//! re-templating folds literal subtrees into a parameter, so nothing counted before is lost.
//! The caller may also fold literals by what they answer ([`PathTrie::fold_alike`]): words
//! that answer the records a parameter answers are values of it.
//!
//! Must not: grow without bound (the caller passes a node cap; a position that would grow past
//! it is collapsed into a parameter, and the caller is told), recurse deeper than
//! [`MAX_SEGMENTS`], or panic on any path (empty segments, escapes, unicode, long segments).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's literal children that are not known words, versions or conventions become one
/// parameter when there are more than this many and most were seen once (see `over_limit`).
/// Real APIs put at most a dozen or two non-trivial constant children under one resource (most
/// of the common ones are in [`KNOWN_WORDS`] and never count), while id-like values
/// (usernames, slugs) pass any bound quickly. Compound words (`check-runs`, `payment_intents`)
/// count half: they are how constants are spelled, rarely how values are.
pub const MAX_LITERAL_SIBLINGS: usize = 16;

/// The same bound for the children of the root, of a version segment (`v1`) and of `api`:
/// these list an API's top-level resources (Stripe has ~50 under `/v1`, GitHub ~40 under `/`)
/// and are almost never ids. It also holds below them, however often the children are seen.
pub const MAX_TOP_SIBLINGS: usize = 128;

/// Paths with more segments are refused: no real API nests deeper, and it bounds recursion
/// (and the nesting of the persisted JSON, which `serde_json` reads to depth 128).
pub const MAX_SEGMENTS: usize = 16;

/// A segment longer than this (in bytes) is a value, never a constant.
pub const MAX_LITERAL_LEN: usize = 64;

/// Common API words that are never templated (and never count towards
/// [`MAX_LITERAL_SIBLINGS`]). Sorted, lowercase; compared ASCII case-insensitively.
pub const KNOWN_WORDS: &[&str] = &[
    "about",
    "access",
    "account",
    "accounts",
    "actions",
    "activate",
    "activity",
    "add",
    "addresses",
    "admin",
    "alerts",
    "all",
    "analytics",
    "api",
    "apis",
    "app",
    "apps",
    "archive",
    "artifacts",
    "assets",
    "assignees",
    "attachments",
    "audit",
    "auth",
    "authorize",
    "avatar",
    "balance",
    "batch",
    "billing",
    "blobs",
    "blocks",
    "branches",
    "bulk",
    "cache",
    "callback",
    "cancel",
    "cards",
    "cart",
    "categories",
    "changes",
    "charges",
    "check",
    "checkout",
    "clients",
    "close",
    "collaborators",
    "comments",
    "commits",
    "compare",
    "config",
    "configuration",
    "confirm",
    "contacts",
    "content",
    "contents",
    "contributors",
    "count",
    "create",
    "current",
    "customers",
    "dashboard",
    "data",
    "debug",
    "default",
    "delete",
    "deployments",
    "details",
    "devices",
    "disable",
    "download",
    "drafts",
    "edit",
    "enable",
    "environments",
    "events",
    "export",
    "feed",
    "feedback",
    "files",
    "filter",
    "follow",
    "followers",
    "following",
    "forks",
    "git",
    "graphql",
    "groups",
    "health",
    "healthz",
    "history",
    "hooks",
    "images",
    "import",
    "info",
    "install",
    "installations",
    "invitations",
    "invoices",
    "issues",
    "items",
    "jobs",
    "keys",
    "labels",
    "languages",
    "latest",
    "license",
    "list",
    "live",
    "livez",
    "login",
    "logout",
    "logs",
    "me",
    "media",
    "members",
    "merge",
    "merges",
    "messages",
    "metadata",
    "metrics",
    "milestones",
    "mine",
    "new",
    "next",
    "notifications",
    "oauth",
    "oauth2",
    "open",
    "options",
    "orders",
    "org",
    "organizations",
    "orgs",
    "overview",
    "owner",
    "page",
    "pages",
    "password",
    "payments",
    "permissions",
    "pets",
    "photos",
    "ping",
    "plans",
    "posts",
    "preferences",
    "prices",
    "products",
    "profile",
    "projects",
    "public",
    "publish",
    "pulls",
    "query",
    "readiness",
    "readme",
    "ready",
    "readyz",
    "recent",
    "refresh",
    "refunds",
    "register",
    "releases",
    "remove",
    "replies",
    "reports",
    "repos",
    "repositories",
    "reset",
    "resources",
    "reviews",
    "roles",
    "rules",
    "runs",
    "schema",
    "search",
    "secrets",
    "self",
    "send",
    "sessions",
    "settings",
    "signin",
    "signout",
    "signup",
    "starred",
    "stars",
    "start",
    "stats",
    "status",
    "statuses",
    "stop",
    "store",
    "subscribe",
    "subscribers",
    "subscription",
    "subscriptions",
    "summary",
    "sync",
    "tags",
    "tasks",
    "teams",
    "templates",
    "test",
    "threads",
    "timeline",
    "todos",
    "token",
    "tokens",
    "topics",
    "transactions",
    "transfer",
    "tree",
    "trees",
    "unsubscribe",
    "update",
    "upload",
    "uploads",
    "user",
    "users",
    "validate",
    "verify",
    "version",
    "versions",
    "webhooks",
    "whoami",
    "workflows",
];

/// What a segment (or a map key, or a parameter value) looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Could be a constant: words, slugs, short mixed tokens.
    Word = 0,
    Integer = 1,
    /// A decimal that is not a version (`-3`, `12.75`, `1e3`).
    Number = 2,
    Uuid = 3,
    /// Hex of 8 characters or more with a digit (hashes, object ids).
    Hex = 4,
    /// An opaque id: base64-ish or prefixed tokens (`cus_9s6XKzkNRiz8i3`, `dQw4w9WgXcQ`).
    Opaque = 5,
    Date = 6,
    DateTime = 7,
    Email = 8,
    Ipv4 = 9,
    Ipv6 = 10,
    /// Longer than [`MAX_LITERAL_LEN`].
    Long = 11,
}

impl Kind {
    /// This kind as a bit of a [`Kinds`] set.
    pub fn bit(self) -> Kinds {
        1 << self as u16
    }
}

/// A set of [`Kind`]s, one bit each.
pub type Kinds = u16;

/// What `s` looks like. Cheap: one or two passes over its bytes.
pub fn classify(s: &str) -> Kind {
    if s.len() > MAX_LITERAL_LEN {
        return Kind::Long;
    }
    let b = s.as_bytes();
    if b.is_empty() {
        return Kind::Word;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return Kind::Integer;
    }
    if is_uuid(s) {
        return Kind::Uuid;
    }
    if is_date(s) {
        return Kind::Date;
    }
    if is_date_time(s) {
        return Kind::DateTime;
    }
    if is_email(s) {
        return Kind::Email;
    }
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Kind::Ipv4;
    }
    if s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Kind::Ipv6;
    }
    if is_version(s) {
        return Kind::Word;
    }
    if is_number(s) {
        return Kind::Number;
    }
    if b.len() >= 8 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit) {
        return Kind::Hex;
    }
    if is_opaque(b) {
        return Kind::Opaque;
    }
    Kind::Word
}

/// 8-4-4-4-12 hex digits.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// `YYYY-MM-DD` with a plausible month and day.
pub fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r.clone()].iter().all(u8::is_ascii_digit).then(|| number(&b[r]));
    matches!((digits(0..4), digits(5..7), digits(8..10)), (Some(_), Some(1..=12), Some(1..=31)))
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_char_boundary(10) || !is_date(&s[..10]) || !matches!(b[10], b'T' | b't') {
        return false;
    }
    let t = &b[11..];
    let two =
        |i: usize, max: u32| t.get(i..i + 2).is_some_and(|d| d.iter().all(u8::is_ascii_digit) && number(d) <= max);
    if !(two(0, 23) && t[2] == b':' && two(3, 59) && t.get(5) == Some(&b':') && two(6, 60)) {
        return false;
    }
    let mut rest = &t[8..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && number(&[*h1, *h2]) <= 23
                && number(&[*m1, *m2]) <= 59
        }
        _ => false,
    }
}

/// `local@domain.tld`, no spaces, one `@` (also `%40`, as sent in a path).
pub fn is_email(s: &str) -> bool {
    let (local, domain) = match s.split_once('@').or_else(|| s.split_once("%40")) {
        Some(p) => p,
        None => return false,
    };
    let ok = |c: char| !c.is_whitespace() && !c.is_control() && c != '@' && c != '/';
    !local.is_empty()
        && local.chars().all(ok)
        && domain.chars().all(ok)
        && domain.split('.').count() >= 2
        && domain.split('.').all(|l| !l.is_empty())
}

/// `v1`, `V2`, `v2.1`, `v1beta`, `v1beta2`, and bare dotted versions (`1.0`, `2.1.3`).
pub fn is_version(s: &str) -> bool {
    let b = s.as_bytes();
    if let Some(rest) = b.strip_prefix(b"v").or_else(|| b.strip_prefix(b"V")) {
        let n = rest.iter().take_while(|c| c.is_ascii_digit() || **c == b'.').count();
        let (num, tail) = rest.split_at(n);
        let letters = tail.iter().take_while(|c| c.is_ascii_lowercase()).count();
        return num.first().is_some_and(u8::is_ascii_digit)
            && !num.ends_with(b".")
            && !num.windows(2).any(|w| w == b"..")
            && tail[letters..].iter().all(u8::is_ascii_digit)
            && tail.len() <= 12;
    }
    let parts: Vec<&[u8]> = b.split(|c| *c == b'.').collect();
    (2..=3).contains(&parts.len())
        && parts[0].len() <= 2
        && parts.iter().all(|p| (1..=3).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

fn is_number(s: &str) -> bool {
    s.bytes().any(|c| c.is_ascii_digit())
        && s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Base64-ish or prefixed tokens with a digit: 16+ characters, or 10+ with both cases. A
/// compound of lowercase words (`release-2024-notes`) is not one.
fn is_opaque(b: &[u8]) -> bool {
    let token = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'=' | b'+' | b'.' | b'~'));
    let digit = b.iter().any(u8::is_ascii_digit);
    let alpha = b.iter().any(u8::is_ascii_alphabetic);
    if !token || !digit || !alpha {
        return false;
    }
    let mixed_case = b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase);
    let wordy = b
        .split(|c| matches!(c, b'_' | b'-' | b'.'))
        .all(|p| p.iter().all(u8::is_ascii_lowercase) || p.iter().all(u8::is_ascii_digit) && p.len() <= 4);
    (b.len() >= 16 && !wordy) || (b.len() >= 10 && mixed_case) || (b.len() >= 8 && !wordy && is_alnum_id(b))
}

/// `user1234`, `a1b2c3d4`: letters and 3+ digits, no separators.
fn is_alnum_id(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_alphanumeric) && b.iter().filter(|c| c.is_ascii_digit()).count() >= 3
}

fn number(d: &[u8]) -> u32 {
    d.iter().fold(0u32, |n, c| n.saturating_mul(10).saturating_add(u32::from(c - b'0')))
}

/// Whether `s` is one of [`KNOWN_WORDS`] (ASCII case-insensitive).
pub fn is_known_word(s: &str) -> bool {
    s.len() <= 20 && KNOWN_WORDS.binary_search(&s.to_ascii_lowercase().as_str()).is_ok()
}

/// Segments that are never templated: empty ones, known words, versions.
fn is_fixed(s: &str) -> bool {
    s.is_empty() || is_known_word(s) || is_version(s)
}

/// Extensions a value may carry inside its segment (`/badges/{id}.json`). Lowercase.
pub const KNOWN_EXTENSIONS: &[&str] = &[
    "atom", "csv", "gif", "htm", "html", "ics", "jpeg", "jpg", "js", "json", "jsonp", "md", "mp3", "mp4", "pdf", "png",
    "rss", "svg", "tar", "txt", "webp", "xml", "yaml", "yml", "zip",
];

/// `name.json` → (`name`, `json`) when the extension is one of [`KNOWN_EXTENSIONS`] and the
/// stem is not empty.
pub fn split_extension(seg: &str) -> Option<(&str, &str)> {
    let (stem, ext) = seg.rsplit_once('.')?;
    (!stem.is_empty() && KNOWN_EXTENSIONS.contains(&ext)).then_some((stem, ext))
}

/// Whether `seg` (a [`Kind::Word`] by [`classify`]) cannot plausibly be a constant of a REST
/// path, so is a value at first sight: constants are words (kebab, snake, camel, dotted),
/// versions, `$metadata`/`@me`-style prefixed words or `name:verb` custom methods, spelt in the
/// unreserved characters, so they never need a percent-escape. A value is: anything with a
/// `%` escape (spaces, non-ASCII, controls, reserved characters), raw whitespace or controls,
/// a character outside `[A-Za-z0-9._~-]` (besides the prefix and `:`), a leading `-` or `~` or
/// a trailing `-` or `.` (a lone `-` is GitLab's separator), or a single letter below the top level (`/c/` and `/t/` are
/// Discourse constants at the top; `/formula/y` is a value). Raw non-ASCII stays a possible
/// constant (a localised word); on the wire it arrives escaped anyway.
pub fn is_implausible_constant(seg: &str, top: bool) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b.contains(&b'%') || b.iter().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
        return true;
    }
    let body = seg.strip_prefix(['$', '@']).unwrap_or(seg);
    let unreserved = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'-') || !c.is_ascii();
    let parts_ok = body.split(':').all(|p| !p.is_empty() && p.bytes().all(unreserved));
    if !parts_ok {
        return true;
    }
    if b.len() > 1 && (matches!(b[0], b'-' | b'~') || matches!(b[b.len() - 1], b'-' | b'.')) {
        return true;
    }
    !top && b.len() == 1 && b[0].is_ascii_alphabetic()
}

/// How a segment is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape<'s> {
    /// Possibly a constant.
    Word,
    /// A whole-segment value.
    Value(Kind),
    /// A value followed by a known extension (`5.json`, `%C3%A9.xml`).
    Suffixed(Kind, &'s str),
}

fn shape(seg: &str, top: bool) -> Shape<'_> {
    if let Some((stem, ext)) = split_extension(seg) {
        match classify(stem) {
            Kind::Word if is_implausible_constant(stem, top) => return Shape::Suffixed(Kind::Word, ext),
            Kind::Word => {}
            k => return Shape::Suffixed(k, ext),
        }
    }
    match classify(seg) {
        Kind::Word if is_implausible_constant(seg, top) => Shape::Value(Kind::Word),
        Kind::Word => Shape::Word,
        k => Shape::Value(k),
    }
}

/// A word literal that is never templated: fixed itself, or a fixed stem with a known
/// extension (`overview.json`).
fn is_fixed_literal(seg: &str) -> bool {
    is_fixed(seg) || split_extension(seg).is_some_and(|(stem, _)| is_fixed(stem))
}

/// The kind a literal key contributes when folded into a value slot, and the slot: the
/// extension for `name.json`, none for a whole segment.
fn slot_of(key: &str) -> (Kind, Option<&str>) {
    match split_extension(key) {
        Some((stem, ext)) => (classify(stem), Some(ext)),
        None => (classify(key), None),
    }
}

/// A literal child under one of these is always a value (GitHub's `repos/{owner}/{repo}` and
/// `orgs/{org}`): the number of parameter positions that follow.
fn convention_params(key: &str) -> u8 {
    match key {
        "repos" => 2,
        "orgs" | "organizations" => 1,
        _ => 0,
    }
}

/// Payloads merged when a re-templating folds two subtrees into one.
pub trait Merge {
    fn merge(&mut self, other: Self);
}

/// Why a path was not learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Refused {
    /// More than [`MAX_SEGMENTS`] segments.
    TooDeep,
    /// The node cap was reached and the path needs a constant that is not there.
    NodeCap,
}

/// What learning one path did, for the caller's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// Nodes created.
    pub new_nodes: usize,
    /// Literal siblings were folded into a parameter ([`MAX_LITERAL_SIBLINGS`]).
    pub retemplated: bool,
    /// The node cap forced a position into a parameter (the cardinality guard).
    pub guard: bool,
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'t> {
    Literal(&'t str),
    /// A parameter and the kinds of value seen for it.
    Param(Kinds),
    /// A parameter followed by an extension in the same segment (`{badgeId}.json`).
    Suffixed(Kinds, &'t str),
}

/// A template rendered: `/users/{userId}` and its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub path: String,
    pub params: Vec<(String, Kinds)>,
}

/// A segment trie; leaves carry `T`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub struct PathTrie<T> {
    root: Node<T>,
    nodes: usize,
}

impl<T> Default for PathTrie<T> {
    fn default() -> Self {
        PathTrie { root: Node::default(), nodes: 1 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
struct Node<T> {
    #[serde(default, rename = "l", skip_serializing_if = "BTreeMap::is_empty")]
    lit: BTreeMap<String, Node<T>>,
    #[serde(default, rename = "p", skip_serializing_if = "Option::is_none")]
    param: Option<Box<Node<T>>>,
    /// Parameters followed by an extension in their segment (`{id}.json`), by extension.
    #[serde(default, rename = "s", skip_serializing_if = "BTreeMap::is_empty")]
    sfx: BTreeMap<String, Node<T>>,
    /// On a parameter node: the kinds of value seen.
    #[serde(default, rename = "k", skip_serializing_if = "is_zero")]
    kinds: Kinds,
    /// Every literal child that is not fixed goes to the parameter.
    #[serde(default, rename = "c", skip_serializing_if = "is_false")]
    collapsed: bool,
    #[serde(default, rename = "v", skip_serializing_if = "Option::is_none")]
    leaf: Option<T>,
    /// On a value slot: words folded into it by [`PathTrie::fold_alike`] (at most
    /// [`MAX_ALIKE_WORDS`]), so they come back to it rather than as constants again.
    #[serde(default, rename = "a", skip_serializing_if = "Vec::is_empty")]
    alike: Vec<String>,
    /// On a literal node: paths learned through it (saturating), for [`over_limit`].
    #[serde(default, rename = "h", skip_serializing_if = "is_zero_hits")]
    hits: u32,
}

fn is_zero_hits(h: &u32) -> bool {
    *h == 0
}

fn is_zero(k: &Kinds) -> bool {
    *k == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            lit: BTreeMap::new(),
            param: None,
            sfx: BTreeMap::new(),
            kinds: 0,
            collapsed: false,
            leaf: None,
            alike: Vec::new(),
            hits: 0,
        }
    }
}

/// A path's segments: no leading slash, one trailing slash ignored, query and fragment cut.
pub fn segments(path: &str) -> Vec<&str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        Vec::new()
    } else {
        p.split('/').collect()
    }
}

impl<T: Default + Merge> PathTrie<T> {
    /// Learns `path` and returns its leaf's payload (created empty when new). Creates at most
    /// `max_nodes` nodes in all; at the cap a new value-like segment is folded into its
    /// position's parameter (`Learned::guard`), a new constant is refused.
    pub fn insert(&mut self, path: &str, max_nodes: usize) -> Result<(&mut T, Learned), Refused> {
        let segs = segments(path);
        if segs.len() > MAX_SEGMENTS {
            return Err(Refused::TooDeep);
        }
        let PathTrie { root, nodes } = self;
        let mut learned = Learned::default();
        let mut node = root;
        let mut top = true;
        let mut forced = 0u8;
        for (i, &seg) in segs.iter().enumerate() {
            let next = segs.get(i + 1).copied();
            // `None`: the literal child; `Some((kind, ext))`: the value slot (`ext` for `{x}.ext`).
            let dest: Option<(Kind, Option<&str>)> = match shape(seg, top) {
                Shape::Value(k) => Some((k, None)),
                Shape::Suffixed(k, ext) => Some((k, Some(ext))),
                Shape::Word if is_alike_word(node, seg) => Some(slot_of(seg)),
                Shape::Word if is_fixed_literal(seg) => None,
                Shape::Word if !top && joins_free_text_slot(node, seg, next) => Some(slot_of(seg)),
                Shape::Word if node.lit.contains_key(seg) => None,
                Shape::Word if node.collapsed => Some(slot_of(seg)),
                Shape::Word if *nodes >= max_nodes => {
                    *nodes = adjust(*nodes, collapse(node));
                    learned.guard = true;
                    Some(slot_of(seg))
                }
                Shape::Word => {
                    node.lit.insert(seg.to_owned(), Node::default());
                    *nodes += 1;
                    learned.new_nodes += 1;
                    if over_limit(node, top) {
                        *nodes = adjust(*nodes, collapse(node));
                        learned.retemplated = true;
                        Some(slot_of(seg))
                    } else {
                        None
                    }
                }
            };
            forced = forced.saturating_sub(1);
            if let Some((kind, ext)) = dest {
                if slot(node, ext).is_none() {
                    if *nodes >= max_nodes {
                        return Err(Refused::NodeCap);
                    }
                    let fresh = Node { collapsed: forced > 0, ..Node::default() };
                    match ext {
                        None => node.param = Some(Box::new(fresh)),
                        Some(e) => {
                            node.sfx.insert(e.to_owned(), fresh);
                        }
                    }
                    *nodes += 1;
                    learned.new_nodes += 1;
                }
                let Some(p) = slot_mut(node, ext) else { return Err(Refused::NodeCap) };
                p.kinds |= kind.bit();
                if !top {
                    let (before, after) = fold_siblings(node, ext, next);
                    if before != after {
                        *nodes = adjust(*nodes, (before, after));
                        learned.retemplated = true;
                    }
                }
                let Some(p) = slot_mut(node, ext) else { return Err(Refused::NodeCap) };
                node = p;
                top = false;
            } else {
                if !node.lit.contains_key(seg) {
                    if *nodes >= max_nodes {
                        return Err(Refused::NodeCap);
                    }
                    *nodes += 1;
                    learned.new_nodes += 1;
                }
                forced = convention_params(seg);
                top = is_version(seg) || seg.eq_ignore_ascii_case("api");
                node = node.lit.entry(seg.to_owned()).or_default();
                node.hits = node.hits.saturating_add(1);
                if forced > 0 {
                    node.collapsed = true;
                }
            }
        }
        Ok((node.leaf.get_or_insert_with(T::default), learned))
    }

    /// After `path`'s payload learned something: folds the word constants on its route into
    /// their position's value slot when they look like values of it by what they answer
    /// (`fingerprints` of a payload: e.g. its responses' record structures). A literal child
    /// joins the slot when the slot has taken free text (see [`joins_free_text_slot`]) and
    /// some leaf of its subtree has a fingerprint a leaf of the slot's subtree at the same
    /// depth has (`/artists/enim` next to `/artists/{artistId}`); or, with no such slot, when
    /// at least [`ALIKE_MIN_SIBLINGS`] literal siblings share one fingerprint at the same depth
    /// (an enum: `/packages/{package_type}/{name}` with `npm`, `maven`, `docker`), or two at
    /// [`ALIKE_PAIR_DEPTH`] segments below or more (`daily`, `monthly` before `{start}/{end}`),
    /// when no known word follows any of them and, unless they follow a value
    /// (`/aggregate/{project}/all-editor-types/...`), no constant at all. Fixed words fold only
    /// after a value and by what they lead to through two values or more (see
    /// [`compared_prints`]), so `followers` and `following`, which answer the same users, stay
    /// apart. On a value slot's route, the literal siblings that answer what the slot answers
    /// join it too ([`words_answering_like`]). Returns whether anything was folded.
    pub fn fold_alike(&mut self, path: &str, fingerprints: impl Fn(&T) -> Vec<Print>) -> bool {
        let mut folded = false;
        // Each pass folds literals away or ends; the bound keeps one sample's work short.
        for _ in 0..MAX_SEGMENTS {
            let segs = segments(path);
            if segs.len() > MAX_SEGMENTS {
                return folded;
            }
            let Some(steps) = route(&self.root, &segs) else { return folded };
            let PathTrie { root, nodes } = self;
            let mut node = &mut *root;
            let mut top = true;
            let mut under_value = false;
            let mut after_value = false;
            let mut done = true;
            for (seg, step) in segs.iter().zip(steps) {
                // Which literal children of `node` to fold, into the slot for `ext`.
                let (keys, ext) = match step {
                    _ if top => (Vec::new(), None),
                    Step::Lit if shape(seg, false) == Shape::Word => {
                        (alike_siblings(node, seg, under_value, after_value, &fingerprints), slot_of(seg).1)
                    }
                    Step::Lit => (Vec::new(), None),
                    Step::Param | Step::Sfx => {
                        let ext = if step == Step::Sfx { split_extension(seg).map(|(_, e)| e) } else { None };
                        (words_answering_like(node, ext, after_value, &fingerprints), ext)
                    }
                };
                if !keys.is_empty() {
                    let before = count(node);
                    for k in keys {
                        fold_key(node, &k);
                        if let Some(v) = slot_mut(node, ext) {
                            remember(&mut v.alike, k);
                        }
                    }
                    settle_slots(node);
                    *nodes = adjust(*nodes, (before, count(node)));
                    folded = true;
                    done = false;
                    break;
                }
                let next = match step {
                    Step::Lit => node.lit.get_mut(*seg),
                    Step::Param => node.param.as_deref_mut(),
                    Step::Sfx => split_extension(seg).and_then(|(_, e)| node.sfx.get_mut(e)),
                };
                let Some(next) = next else { return folded };
                top = step == Step::Lit && (is_version(seg) || seg.eq_ignore_ascii_case("api"));
                under_value = step != Step::Lit;
                after_value |= under_value;
                node = next;
            }
            if done {
                break;
            }
        }
        folded
    }

    /// The payload of the template `path` falls under, if any.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut T> {
        let segs = segments(path);
        let choices = route(&self.root, &segs)?;
        let mut node = &mut self.root;
        for (seg, step) in segs.iter().zip(choices) {
            node = match step {
                Step::Lit => node.lit.get_mut(*seg)?,
                Step::Param => node.param.as_deref_mut()?,
                Step::Sfx => node.sfx.get_mut(split_extension(seg)?.1)?,
            };
        }
        node.leaf.as_mut()
    }
}

impl<T> PathTrie<T> {
    /// Nodes in the trie (the root included).
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The template `path` falls under (constants first, then parameters), if any.
    pub fn template_of(&self, path: &str) -> Option<(Template, &T)> {
        let segs = segments(path);
        let choices = route(&self.root, &segs)?;
        let mut node = &self.root;
        let mut out = Vec::with_capacity(segs.len());
        for (seg, step) in segs.iter().zip(choices) {
            match step {
                Step::Lit => {
                    let (k, n) = node.lit.get_key_value(*seg)?;
                    out.push(Segment::Literal(k.as_str()));
                    node = n;
                }
                Step::Param => {
                    node = node.param.as_deref()?;
                    out.push(Segment::Param(node.kinds));
                }
                Step::Sfx => {
                    let (e, n) = node.sfx.get_key_value(split_extension(seg)?.1)?;
                    out.push(Segment::Suffixed(n.kinds, e.as_str()));
                    node = n;
                }
            }
        }
        Some((render(&out), node.leaf.as_ref()?))
    }

    /// Every template with a payload, in a stable order.
    pub fn leaves(&self) -> Vec<(Template, &T)> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        walk(&self.root, &mut stack, &mut out);
        out
    }
}

fn walk<'t, T>(node: &'t Node<T>, stack: &mut Vec<Segment<'t>>, out: &mut Vec<(Template, &'t T)>) {
    if let Some(leaf) = &node.leaf {
        out.push((render(stack), leaf));
    }
    for (k, child) in &node.lit {
        stack.push(Segment::Literal(k));
        walk(child, stack, out);
        stack.pop();
    }
    for (e, child) in &node.sfx {
        stack.push(Segment::Suffixed(child.kinds, e));
        walk(child, stack, out);
        stack.pop();
    }
    if let Some(p) = &node.param {
        stack.push(Segment::Param(p.kinds));
        walk(p, stack, out);
        stack.pop();
    }
}

/// A step of a route: the literal child, the parameter, or the parameter with the segment's
/// extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Lit,
    Param,
    Sfx,
}

/// Which child to take at each segment to reach a leaf; constants are tried first, then a
/// parameter with the segment's extension, then a whole-segment parameter. A depth-first
/// search of a tree visits each node at most once.
fn route<T>(node: &Node<T>, segs: &[&str]) -> Option<Vec<Step>> {
    let Some((seg, rest)) = segs.split_first() else {
        return node.leaf.is_some().then(Vec::new);
    };
    let via = |child: &Node<T>, step: Step| {
        route(child, rest).map(|mut v| {
            v.insert(0, step);
            v
        })
    };
    node.lit
        .get(*seg)
        .and_then(|c| via(c, Step::Lit))
        .or_else(|| split_extension(seg).and_then(|(_, e)| node.sfx.get(e)).and_then(|c| via(c, Step::Sfx)))
        .or_else(|| node.param.as_deref().and_then(|p| via(p, Step::Param)))
}

/// Whether `seg` was folded into its value slot by [`PathTrie::fold_alike`] (fixed words
/// included). Runs for every segment learnt: no classification unless a slot remembers words.
fn is_alike_word<T>(node: &Node<T>, seg: &str) -> bool {
    let remembers = |v: &Node<T>| !v.alike.is_empty() && v.alike.iter().any(|a| a == seg);
    match split_extension(seg) {
        Some((_, e)) => node.sfx.get(e).is_some_and(remembers),
        None => node.param.as_deref().is_some_and(remembers),
    }
}

/// The value slot of `node` for `ext` (the parameter, or the `{x}.ext` one).
fn slot<'n, T>(node: &'n Node<T>, ext: Option<&str>) -> Option<&'n Node<T>> {
    match ext {
        None => node.param.as_deref(),
        Some(e) => node.sfx.get(e),
    }
}

fn slot_mut<'n, T>(node: &'n mut Node<T>, ext: Option<&str>) -> Option<&'n mut Node<T>> {
    match ext {
        None => node.param.as_deref_mut(),
        Some(e) => node.sfx.get_mut(e),
    }
}

/// Whether the word `seg` (not fixed) is a value of its position's slot: the slot has taken
/// free text (a [`Kind::Word`] value: escapes, spaces, folded words), and the constant that
/// follows `seg` also follows the slot (`/artists/dolor/albums` next to
/// `/artists/{artistId}/albums`, where `{artistId}` took `ad%20nostrud`). A word is never a
/// value of a slot that took only numbers, uuids, dates or opaque ids (Stripe's
/// `/invoices/upcoming/lines` next to `/invoices/{invoice}/lines`), nor when it ends the path
/// (`/media/popular` next to `/media/{mediaId}`): there a constant is as likely as a value.
fn joins_free_text_slot<T>(node: &Node<T>, seg: &str, next: Option<&str>) -> bool {
    let Some(next) = next else { return false };
    slot(node, slot_of(seg).1).is_some_and(|v| {
        v.kinds & Kind::Word.bit() != 0 && shape(next, false) == Shape::Word && v.lit.contains_key(next)
    })
}

/// After a value went to the slot `ext` of `node` with `next` following it: when the slot takes
/// free text, folds into it the word siblings (not fixed, same extension) followed by the same
/// constant `next` (see [`joins_free_text_slot`]). Returns the node count before and after.
fn fold_siblings<T: Merge>(node: &mut Node<T>, ext: Option<&str>, next: Option<&str>) -> (usize, usize) {
    let Some(next) = next else { return (0, 0) };
    if slot(node, ext).is_none_or(|v| v.kinds & Kind::Word.bit() == 0) || shape(next, false) != Shape::Word {
        return (0, 0);
    }
    let keys: Vec<String> = node
        .lit
        .iter()
        .filter(|(k, c)| !is_fixed_literal(k) && slot_of(k).1 == ext && c.lit.contains_key(next))
        .map(|(k, _)| k.clone())
        .collect();
    if keys.is_empty() {
        return (0, 0);
    }
    let before = count(node);
    for k in keys {
        fold_key(node, &k);
    }
    settle_slots(node);
    (before, count(node))
}

/// Fewest literal siblings sharing a fingerprint that fold into a new parameter
/// ([`PathTrie::fold_alike`]): two could be a pair of constants that return the same record
/// (`/public_members`, `/outside_collaborators`).
pub const ALIKE_MIN_SIBLINGS: usize = 3;

/// Two literal siblings are enough when they answer alike this many segments below
/// (`daily/{start}/{end}` next to `monthly/{start}/{end}`): constants that lead to the same
/// record through the same further path are rare, enum values of one parameter are not.
pub const ALIKE_PAIR_DEPTH: usize = 2;

/// Words a value slot remembers as folded into it by [`PathTrie::fold_alike`].
pub const MAX_ALIKE_WORDS: usize = 32;

fn remember(words: &mut Vec<String>, w: String) {
    if words.len() < MAX_ALIKE_WORDS && w.len() <= MAX_LITERAL_LEN && !words.contains(&w) {
        words.push(w);
    }
}

/// Leaves visited per subtree when fingerprinting it, and fingerprints kept.
const ALIKE_MAX_VISITS: usize = 64;

/// What a leaf answers: one record's keys (hashes, sorted), see [`PathTrie::fold_alike`].
pub type Print = Vec<u64>;

/// The first key of a weak print: an answer without a body, a body that is not JSON, or a
/// JSON record of few keys (the second key tells which, with the method and status). It shows
/// that a word answers like a free-text parameter, but never makes siblings values by itself:
/// constants answer 204 alike (GitHub's `PUT /repos/{owner}/{repo}/lfs` and
/// `/vulnerability-alerts`), and small records (`{id, name}`) look alike too easily.
pub const WEAK: u64 = 0;

fn is_weak(p: &Print) -> bool {
    p.first() == Some(&WEAK)
}

/// The prints of the leaves of `node`'s subtree, each with its depth below `node`; sorted.
fn subtree_prints<T>(node: &Node<T>, prints: &impl Fn(&T) -> Vec<Print>) -> Vec<(usize, Print)> {
    let mut out = Vec::new();
    leaves_below(node, &mut |d, _, leaf| out.extend(prints(leaf).into_iter().map(|p| (d, p))));
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether two subtrees answer alike: everything one answers (by depth), the other answers
/// too. Sharing one record is not enough: the top-level resources of an API that wraps every
/// answer the same way (Wikimedia's `/metrics/edits/...`, `/metrics/editors/...`) share
/// some, while the values of one parameter lead to the same records everywhere.
fn share(a: &[(usize, Print)], b: &[(usize, Print)]) -> bool {
    let within = |x: &[(usize, Print)], y: &[(usize, Print)]| x.iter().all(|p| y.binary_search(p).is_ok());
    !a.is_empty() && !b.is_empty() && (within(a, b) || within(b, a))
}

/// Whether each record `a` answers is, at the same depth, one `b` answers with possibly more
/// keys: a value answers what its parameter answers, with the optional properties the
/// parameter has been seen with more often.
fn covered(a: &[(usize, Print)], b: &[(usize, Print)]) -> bool {
    let within = |x: &Print, y: &Print| x.iter().all(|k| y.binary_search(k).is_ok());
    !a.is_empty() && a.iter().all(|(d, x)| b.iter().any(|(e, y)| d == e && within(x, y)))
}

/// The prints `node`'s literal child `key` is compared by: its subtree's; for a fixed word
/// (a common API word), only after a value (`after_value`) and only those of leaves reached
/// through two values or more at the end ([`MIN_VALUE_TAIL`]). Wikimedia's
/// `/{project}/{access}/{agent}/{granularity}/{start}/{end}` takes `user` and `daily` as
/// values: words after a value that lead, through a date range, to the records their siblings
/// lead to. Constants that are common words lead on to constants (`issues/{n}/comments`) or
/// answer right there (`followers`, `following`). Versions never fold.
fn compared_prints<T>(
    key: &str,
    c: &Node<T>,
    after_value: bool,
    prints: &impl Fn(&T) -> Vec<Print>,
) -> Vec<(usize, Print)> {
    if !is_fixed_literal(key) {
        return subtree_prints(c, prints);
    }
    if !after_value || is_version(split_extension(key).map_or(key, |(stem, _)| stem)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    leaves_below(c, &mut |d, tail, leaf| {
        if tail >= MIN_VALUE_TAIL {
            out.extend(prints(leaf).into_iter().filter(|p| !is_weak(p)).map(|p| (d, p)));
        }
    });
    out.sort_unstable();
    out.dedup();
    out
}

/// Values in a row at the end of a path (a date range: `{start}/{end}`) that mark the words
/// before them as possible enum values, fixed words included ([`compared_prints`]).
const MIN_VALUE_TAIL: usize = 2;

/// Calls `f(depth, tail, leaf)` for the leaves of `node`'s subtree ([`ALIKE_MAX_VISITS`] nodes
/// at most), `tail` being the number of value segments that end the leaf's path below `node`.
fn leaves_below<T>(node: &Node<T>, f: &mut impl FnMut(usize, usize, &T)) {
    fn go<T>(n: &Node<T>, d: usize, tail: usize, visits: &mut usize, f: &mut impl FnMut(usize, usize, &T)) {
        if *visits >= ALIKE_MAX_VISITS || d > MAX_SEGMENTS {
            return;
        }
        *visits += 1;
        if let Some(leaf) = &n.leaf {
            f(d, tail, leaf);
        }
        for c in n.lit.values() {
            go(c, d + 1, 0, visits, f);
        }
        for c in n.sfx.values().chain(n.param.as_deref()) {
            go(c, d + 1, tail + 1, visits, f);
        }
    }
    go(node, 0, 0, &mut 0, f);
}

/// Whether every leaf below `node` (one at least) ends in [`MIN_VALUE_TAIL`] values or more.
fn ends_in_values<T>(node: &Node<T>) -> bool {
    let (mut leaves, mut short) = (0usize, 0usize);
    leaves_below(node, &mut |_, tail, _| {
        leaves += 1;
        short += usize::from(tail < MIN_VALUE_TAIL);
    });
    leaves > 0 && short == 0
}

/// The literal children of `node` to fold into a value slot with `seg` (see
/// [`PathTrie::fold_alike`]); empty when none.
fn alike_siblings<T>(
    node: &Node<T>,
    seg: &str,
    under_value: bool,
    after_value: bool,
    prints: &impl Fn(&T) -> Vec<Print>,
) -> Vec<String> {
    let Some(child) = node.lit.get(seg) else { return Vec::new() };
    let mine = compared_prints(seg, child, after_value, prints);
    if mine.is_empty() {
        return Vec::new();
    }
    let ext = slot_of(seg).1;
    if let Some(v) = slot(node, ext) {
        if v.kinds & Kind::Word.bit() != 0 {
            return if covered(&mine, &subtree_prints(v, prints)) { vec![seg.to_owned()] } else { Vec::new() };
        }
    }
    let strong = |mut v: Vec<(usize, Print)>| {
        v.retain(|(_, p)| !is_weak(p));
        v
    };
    let mine = strong(mine);
    if mine.is_empty() {
        return Vec::new();
    }
    // Enum values lead to values, to nothing (`/packages/{package_type}/{name}`) or, after a
    // value, to more enum values (`/{project}/{editor-type}/{page-type}`); constants that
    // answer alike lead on to known words (GitHub's `actions/secrets`, `dependabot/secrets`,
    // after `{repo}`) or, after a constant, to constants (Wikimedia's `/metrics/edits/aggregate`,
    // `/metrics/editors/aggregate`), and while only part of them has been seen one subtree
    // answers a subset of what another does.
    // Unless, after a value, everything below ends in a range of values: enum positions in a
    // row (`/{project}/{access}/{agent}/{granularity}/{start}/{end}`), some spelt as common words.
    let leads_on = |c: &Node<T>| {
        (c.lit.keys().any(|k| is_fixed_literal(k)) || (!under_value && !c.lit.is_empty()))
            && !(after_value && ends_in_values(c))
    };
    if leads_on(child) {
        return Vec::new();
    }
    let mut alike: Vec<(String, Vec<(usize, Print)>)> = Vec::new();
    for (k, c) in &node.lit {
        if k == seg || leads_on(c) || slot_of(k).1 != ext || shape(k, false) != Shape::Word {
            continue;
        }
        let theirs = strong(compared_prints(k, c, after_value, prints));
        if share(&mine, &theirs) {
            alike.push((k.clone(), theirs));
        }
    }
    // One fingerprint `seg` and the others share, not merely each with `seg`.
    let Some(p) = mine.iter().find(|p| {
        let need = if p.0 >= ALIKE_PAIR_DEPTH { 2 } else { ALIKE_MIN_SIBLINGS };
        alike.iter().filter(|(_, t)| t.binary_search(p).is_ok()).count() + 1 >= need
    }) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = alike.into_iter().filter(|(_, t)| t.binary_search(p).is_ok()).map(|(k, _)| k).collect();
    keys.push(seg.to_owned());
    keys
}

/// The word children of `node` (not fixed, with the slot's extension `ext`) that answer what
/// its free-text value slot answers (see [`covered`]): values the slot has taken, seen before
/// the slot was, or answering with bodies the slot has not been sampled with yet. The other
/// side of the check [`alike_siblings`] makes when a literal's route is learned.
fn words_answering_like<T>(
    node: &Node<T>,
    ext: Option<&str>,
    after_value: bool,
    prints: &impl Fn(&T) -> Vec<Print>,
) -> Vec<String> {
    let Some(v) = slot(node, ext) else { return Vec::new() };
    if v.kinds & Kind::Word.bit() == 0 || node.lit.is_empty() {
        return Vec::new();
    }
    let theirs = subtree_prints(v, prints);
    if theirs.is_empty() {
        return Vec::new();
    }
    node.lit
        .iter()
        .filter(|(k, _)| slot_of(k).1 == ext && shape(k, false) == Shape::Word)
        .filter(|(k, c)| covered(&compared_prints(k, c, after_value, prints), &theirs))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Moves the literal child `key` into its value slot (merging subtrees and payloads).
fn fold_key<T: Merge>(node: &mut Node<T>, key: &str) {
    let Some(child) = node.lit.remove(key) else { return };
    let (kind, ext) = slot_of(key);
    let slot = match ext {
        None => &mut **node.param.get_or_insert_with(Box::default),
        Some(e) => node.sfx.entry(e.to_owned()).or_default(),
    };
    slot.kinds |= kind.bit();
    merge_node(slot, child);
}

fn settle_slots<T: Merge>(node: &mut Node<T>) {
    if let Some(p) = node.param.as_deref_mut() {
        settle(p);
    }
    for c in node.sfx.values_mut() {
        settle(c);
    }
}

/// Whether `node` has more literal children that may be values than its bound allows.
///
/// Below the root's bound ([`MAX_TOP_SIBLINGS`], which holds everywhere), [`MAX_LITERAL_SIBLINGS`]
/// is passed only while most of those children have been seen once: the share of siblings
/// seen exactly once estimates how likely the next path brings a new one (Good and Turing's
/// estimate of unseen species). Values keep arriving (each username once or twice); constants
/// are called again and again, so a resource with many constant children (GitHub has 21 under
/// `/repos/{owner}/{repo}` that are not common words) keeps them once its clients have called
/// a few of them twice.
fn over_limit<T>(node: &Node<T>, top: bool) -> bool {
    let bound = if top { MAX_TOP_SIBLINGS } else { MAX_LITERAL_SIBLINGS };
    let (mut weight, mut siblings, mut once) = (0usize, 0usize, 0usize);
    for (k, c) in node.lit.iter().filter(|(k, _)| !is_fixed_literal(k)) {
        weight += if is_compound(split_extension(k).map_or(k.as_str(), |(stem, _)| stem)) { 1 } else { 2 };
        siblings += 1;
        once += usize::from(c.hits <= SEEN_ONCE);
    }
    weight > 2 * MAX_TOP_SIBLINGS || (weight > 2 * bound && 2 * once > siblings)
}

/// A literal child with at most this many paths learned through it counts as seen once in
/// [`over_limit`] (the newest child has none yet when the bound is checked).
const SEEN_ONCE: u32 = 1;

/// `check-runs`, `payment_intents`: lowercase words joined by `-` or `_`.
fn is_compound(s: &str) -> bool {
    s.contains(['-', '_']) && s.split(['-', '_']).all(|w| w.len() >= 2 && w.bytes().all(|c| c.is_ascii_lowercase()))
}

/// Folds `node`'s literal children that are not fixed into its parameter child (merging
/// their subtrees and payloads) and marks it collapsed. Returns the node count before and
/// after; never more after, as a merge only unions what it folds.
fn collapse<T: Merge>(node: &mut Node<T>) -> (usize, usize) {
    let before = count(node);
    node.collapsed = true;
    let values: Vec<String> = node.lit.keys().filter(|k| !is_fixed_literal(k)).cloned().collect();
    if values.is_empty() {
        return (before, before);
    }
    for key in values {
        fold_key(node, &key);
    }
    settle_slots(node);
    (before, count(node))
}

fn adjust(nodes: usize, (before, after): (usize, usize)) -> usize {
    (nodes + after).saturating_sub(before)
}

/// After a merge, a node may have too many literal children itself: collapse where needed.
fn settle<T: Merge>(node: &mut Node<T>) {
    if !node.collapsed && over_limit(node, false) {
        collapse(node);
    }
    for (k, child) in node.lit.iter_mut() {
        if !child.collapsed && over_limit(child, is_version(k) || k.eq_ignore_ascii_case("api")) {
            collapse(child);
        }
    }
}

fn merge_node<T: Merge>(into: &mut Node<T>, from: Node<T>) {
    into.kinds |= from.kinds;
    for a in from.alike {
        remember(&mut into.alike, a);
    }
    into.collapsed |= from.collapsed;
    into.hits = into.hits.saturating_add(from.hits);
    match (&mut into.leaf, from.leaf) {
        (Some(a), Some(b)) => a.merge(b),
        (a @ None, b) => *a = b,
        (Some(_), None) => {}
    }
    for (key, child) in from.lit {
        if into.collapsed && !is_fixed_literal(&key) {
            let (kind, ext) = slot_of(&key);
            let slot = match ext {
                None => &mut **into.param.get_or_insert_with(Box::default),
                Some(e) => into.sfx.entry(e.to_owned()).or_default(),
            };
            slot.kinds |= kind.bit();
            merge_node(slot, child);
        } else if let Some(existing) = into.lit.get_mut(&key) {
            merge_node(existing, child);
        } else {
            into.lit.insert(key, child);
        }
    }
    for (e, child) in from.sfx {
        match into.sfx.get_mut(&e) {
            Some(existing) => merge_node(existing, child),
            None => {
                into.sfx.insert(e, child);
            }
        }
    }
    if let Some(p) = from.param {
        match &mut into.param {
            Some(ip) => merge_node(ip, *p),
            None => into.param = Some(p),
        }
    }
}

fn count<T>(node: &Node<T>) -> usize {
    1 + node.lit.values().map(count).sum::<usize>()
        + node.sfx.values().map(count).sum::<usize>()
        + node.param.as_deref().map_or(0, count)
}

/// Names the parameters of a template and writes it out.
pub fn render(segs: &[Segment<'_>]) -> Template {
    let mut path = String::new();
    let mut params: Vec<(String, Kinds)> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        path.push('/');
        match seg {
            Segment::Literal(s) => path.push_str(&s.replace('{', "%7B").replace('}', "%7D")),
            Segment::Param(kinds) | Segment::Suffixed(kinds, _) => {
                let base = param_name(segs, i, *kinds, params.last().map(|(n, _)| n.as_str()));
                let name = unique(&base, &params);
                path.push('{');
                path.push_str(&name);
                path.push('}');
                if let Segment::Suffixed(_, ext) = seg {
                    path.push('.');
                    path.push_str(ext);
                }
                params.push((name, *kinds));
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Template { path, params }
}

fn unique(base: &str, taken: &[(String, Kinds)]) -> String {
    let free = |n: &str| !taken.iter().any(|(t, _)| t == n);
    if free(base) {
        return base.to_owned();
    }
    (2..).map(|i| format!("{base}{i}")).find(|n| free(n)).unwrap_or_else(|| base.to_owned())
}

fn param_name(segs: &[Segment<'_>], i: usize, kinds: Kinds, prev_param: Option<&str>) -> String {
    if kinds == Kind::Date.bit() {
        return "date".into();
    }
    if kinds == Kind::DateTime.bit() {
        return "dateTime".into();
    }
    let before = |back: usize| i.checked_sub(back).and_then(|j| segs.get(j));
    match (before(1), before(2)) {
        (Some(Segment::Literal(p)), _) => literal_param_name(p, kinds),
        (Some(Segment::Param(_)), Some(Segment::Literal("repos"))) if prev_param == Some("owner") => "repo".into(),
        _ => "id".into(),
    }
}

fn literal_param_name(parent: &str, kinds: Kinds) -> String {
    let numeric = Kind::Integer.bit() | Kind::Number.bit() | Kind::Uuid.bit() | Kind::Hex.bit() | Kind::Opaque.bit();
    match parent {
        "repos" => return "owner".into(),
        "orgs" | "organizations" => return "org".into(),
        "users" if kinds & numeric == 0 => return "username".into(),
        _ => {}
    }
    if is_version(parent) || parent.eq_ignore_ascii_case("api") {
        return "id".into();
    }
    let words: Vec<String> =
        parent.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_owned()).collect();
    let Some((last, first)) = words.split_last() else { return "id".into() };
    let mut name = String::new();
    for (j, w) in first.iter().chain(std::iter::once(&singular(last))).enumerate() {
        let mut cs = w.chars();
        if let Some(c) = cs.next() {
            name.push(if j == 0 { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() });
            name.extend(cs);
        }
    }
    if name.len() > 40 || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return "id".into();
    }
    name.push_str("Id");
    name
}

/// The singular of an English plural, for the common cases (and a few irregulars).
pub fn singular(word: &str) -> String {
    const IRREGULAR: &[(&str, &str)] = &[
        ("people", "person"),
        ("children", "child"),
        ("men", "man"),
        ("women", "woman"),
        ("mice", "mouse"),
        ("geese", "goose"),
        ("feet", "foot"),
        ("teeth", "tooth"),
        ("data", "data"),
        ("media", "media"),
        ("analyses", "analysis"),
        ("statuses", "status"),
        ("aliases", "alias"),
        ("caches", "cache"),
        ("indices", "index"),
        ("matrices", "matrix"),
        ("leaves", "leaf"),
        ("news", "news"),
        ("series", "series"),
        ("species", "species"),
    ];
    let lower = word.to_ascii_lowercase();
    if let Some((_, s)) = IRREGULAR.iter().find(|(p, _)| *p == lower) {
        return keep_case(word, s);
    }
    let cut = |n: usize, add: &str| format!("{}{add}", &word[..word.len() - n]);
    let ends = |s: &str| lower.len() > s.len() + 1 && lower.ends_with(s);
    if ends("ies") {
        cut(3, "y")
    } else if ends("sses") || ends("shes") || ends("ches") || ends("xes") || ends("zzes") {
        cut(2, "")
    } else if ends("ss") || ends("us") || ends("is") {
        word.to_owned()
    } else if ends("s") {
        cut(1, "")
    } else {
        word.to_owned()
    }
}

fn keep_case(original: &str, s: &str) -> String {
    if original.starts_with(|c: char| c.is_ascii_uppercase()) {
        let mut out = s.to_owned();
        if let Some(f) = out.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        out
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Count(u64);

    impl Merge for Count {
        fn merge(&mut self, other: Count) {
            self.0 += other.0;
        }
    }

    const CAP: usize = 10_000;

    fn learn(t: &mut PathTrie<Count>, path: &str) -> Learned {
        let (c, l) = t.insert(path, CAP).unwrap();
        c.0 += 1;
        l
    }

    fn template<T>(t: &PathTrie<T>, path: &str) -> String {
        t.template_of(path).map(|(t, _)| t.path).unwrap_or_else(|| format!("no template for {path}"))
    }

    fn templates(t: &PathTrie<Count>) -> Vec<String> {
        t.leaves().into_iter().map(|(t, _)| t.path).collect()
    }

    #[test]
    fn the_issue_examples() {
        let mut t = PathTrie::default();
        learn(&mut t, "/users/42");
        learn(&mut t, "/repos/a/b/issues/7");
        assert_eq!(template(&t, "/users/42"), "/users/{userId}");
        assert_eq!(template(&t, "/users/7"), "/users/{userId}");
        assert_eq!(template(&t, "/repos/a/b/issues/7"), "/repos/{owner}/{repo}/issues/{issueId}");
        assert_eq!(template(&t, "/repos/x/y/issues/9"), "/repos/{owner}/{repo}/issues/{issueId}");
    }

    #[test]
    fn a_jsonplaceholder_like_api() {
        let mut t = PathTrie::default();
        for p in ["/posts", "/posts/1", "/posts/2", "/posts/1/comments", "/users/3", "/comments?postId=1", "/posts/"] {
            learn(&mut t, p);
        }
        assert_eq!(
            templates(&t),
            ["/comments", "/posts", "/posts/{postId}", "/posts/{postId}/comments", "/users/{userId}"]
        );
        let (tpl, c) = t.template_of("/posts").unwrap();
        assert_eq!((tpl.path.as_str(), c.0), ("/posts", 2), "a trailing slash is the same endpoint");
        assert_eq!(t.template_of("/posts/1").unwrap().1 .0, 2);
    }

    #[test]
    fn github_like_paths() {
        let mut t = PathTrie::default();
        for p in [
            "/repos/octocat/hello-world/pulls/12",
            "/repos/rust-lang/rust/pulls/3/reviews",
            "/repos/octocat/hello-world/git/commits/7638417db6d59f3c431d3e1f261cc637155684cd",
            "/orgs/github/teams",
            "/orgs/rust-lang/teams",
            "/gists/aa5a315d61ae9438b18d",
            "/users/1234/repos",
        ] {
            learn(&mut t, p);
        }
        assert_eq!(template(&t, "/repos/a/b/pulls/1"), "/repos/{owner}/{repo}/pulls/{pullId}");
        assert_eq!(template(&t, "/repos/a/b/pulls/1/reviews"), "/repos/{owner}/{repo}/pulls/{pullId}/reviews");
        assert_eq!(
            template(&t, "/repos/a/b/git/commits/7638417db6d59f3c431d3e1f261cc637155684cd"),
            "/repos/{owner}/{repo}/git/commits/{commitId}"
        );
        assert_eq!(template(&t, "/orgs/x/teams"), "/orgs/{org}/teams");
        assert_eq!(template(&t, "/gists/aa5a315d61ae9438b18d"), "/gists/{gistId}");
        assert_eq!(template(&t, "/users/5/repos"), "/users/{userId}/repos");
    }

    #[test]
    fn value_shaped_segments_are_parameters_at_first_sight() {
        let cases = [
            ("/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6", "/orders/{orderId}"),
            ("/blobs/5d41402abc4b2a76b9719d911017c592", "/blobs/{blobId}"),
            ("/objects/507f1f77bcf86cd799439011", "/objects/{objectId}"),
            ("/customers/cus_9s6XKzkNRiz8i3", "/customers/{customerId}"),
            ("/reports/2024-02-29", "/reports/{date}"),
            ("/events/2024-02-29T10:00:00Z", "/events/{dateTime}"),
            ("/accounts/jane.doe@example.com", "/accounts/{accountId}"),
            ("/hosts/10.0.0.1", "/hosts/{hostId}"),
            ("/prices/-12.5", "/prices/{priceId}"),
            ("/categories/12", "/categories/{categoryId}"),
            ("/addresses/12", "/addresses/{addressId}"),
            ("/people/12", "/people/{personId}"),
            ("/line-items/12", "/line-items/{lineItemId}"),
            ("/order_lines/12", "/order_lines/{orderLineId}"),
            ("/boxes/12", "/boxes/{boxId}"),
            ("/v1/payment_intents/pi_3MtwBwLkdIwHu7ix28a3tqPa", "/v1/payment_intents/{paymentIntentId}"),
            ("/v1/customers/cus_NffrFeUfNV2Hib/sources", "/v1/customers/{customerId}/sources"),
            ("/pet/10", "/pet/{petId}"),
            ("/12", "/{id}"),
            ("/v1/12", "/v1/{id}"),
        ];
        for (path, want) in cases {
            let mut t = PathTrie::default();
            learn(&mut t, path);
            assert_eq!(template(&t, path), want, "{path}");
        }
    }

    #[test]
    fn versions_and_known_words_stay_constants() {
        let mut t = PathTrie::default();
        for p in ["/v1/items", "/v2.1/items", "/v1beta2/items", "/api/status", "/api/health", "/api/1.0/search"] {
            learn(&mut t, p);
        }
        assert_eq!(
            templates(&t),
            ["/api/1.0/search", "/api/health", "/api/status", "/v1/items", "/v1beta2/items", "/v2.1/items"]
        );
    }

    #[test]
    fn many_word_siblings_become_a_parameter_but_a_few_do_not() {
        let mut t = PathTrie::default();
        for fruit in ["apples", "pears", "plums", "cherries", "figs"] {
            learn(&mut t, &format!("/shop/{fruit}"));
        }
        learn(&mut t, "/users/me");
        learn(&mut t, "/users/search");
        let mut retemplated = 0;
        for name in NAMES.iter().take(100) {
            retemplated += usize::from(learn(&mut t, &format!("/users/{name}/repos")).retemplated);
        }
        learn(&mut t, "/users/zebediah/repos");
        assert_eq!(retemplated, 1, "one re-templating, then values go straight to the parameter");
        assert_eq!(
            templates(&t),
            [
                "/shop/apples",
                "/shop/cherries",
                "/shop/figs",
                "/shop/pears",
                "/shop/plums",
                "/users/me",
                "/users/search",
                "/users/{username}/repos"
            ]
        );
        let (_, c) = t.template_of("/users/anyone/repos").unwrap();
        assert_eq!(c.0, 101, "paths seen before the re-templating are merged, not lost");
    }

    #[test]
    fn top_level_resources_stay_constants() {
        let mut t = PathTrie::default();
        for name in WORDS.iter().take(60) {
            learn(&mut t, &format!("/v1/{name}_things/1"));
            learn(&mut t, &format!("/{name}/1"));
        }
        assert_eq!(template(&t, "/v1/alice_things/7"), "/v1/alice_things/{aliceThingId}");
        assert_eq!(template(&t, "/bob/7"), "/bob/{bobId}");
        assert_eq!(t.leaves().len(), 120);
    }

    /// 100 distinct word-like names.
    const NAMES: [&str; 100] = {
        let mut out = [""; 100];
        let mut i = 0;
        while i < 100 {
            out[i] = WORDS[i];
            i += 1;
        }
        out
    };
    const WORDS: [&str; 100] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
        "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "xavier", "yolanda", "zoe", "aaron",
        "bella", "caleb", "daisy", "ethan", "fiona", "gavin", "hazel", "isaac", "jade", "kevin", "luna", "mason",
        "nora", "oscar", "piper", "quinn", "ruby", "simon", "tessa", "umar", "vera", "wyatt", "xena", "yusuf", "zara",
        "adrian", "brooke", "connor", "delia", "elliot", "freya", "gideon", "harper", "ian", "jolene", "kai", "lena",
        "milo", "nadia", "otis", "paloma", "reid", "sage", "tobias", "uma", "vince", "willa", "yara", "zeke", "amos",
        "bianca", "cyrus", "dora", "enzo", "flora", "gus", "hana", "igor", "june", "kurt", "lola", "marco", "nell",
        "omar", "pia", "rosa", "saul", "tara", "ugo", "vida", "wren", "yves", "zelda", "abel", "bruno", "cleo", "dex",
    ];

    #[test]
    fn parameter_names_are_unique_and_sensible_after_parameters() {
        let mut t = PathTrie::default();
        learn(&mut t, "/users/1/users/2");
        learn(&mut t, "/files/3/7");
        learn(&mut t, "/3/7");
        assert_eq!(template(&t, "/users/1/users/2"), "/users/{userId}/users/{userId2}");
        assert_eq!(template(&t, "/files/1/2"), "/files/{fileId}/{id}");
        assert_eq!(template(&t, "/1/2"), "/{id}/{id2}");
    }

    #[test]
    fn the_node_cap_holds_and_the_guard_is_reported() {
        let mut t: PathTrie<Count> = PathTrie::default();
        let cap = 20;
        let mut guards = 0;
        let mut refused = 0;
        for i in 0..200 {
            match t.insert(&format!("/things/name{i}x/more/k{}", i % 7), cap) {
                Ok((c, l)) => {
                    c.0 += 1;
                    guards += usize::from(l.guard);
                }
                Err(_) => refused += 1,
            }
            assert!(t.nodes() <= cap, "{} nodes after {i}", t.nodes());
        }
        assert!(guards > 0, "the guard fired");
        assert_eq!(t.nodes(), count(&t.root));
        let total: u64 = t.leaves().iter().map(|(_, c)| c.0).sum();
        assert_eq!(total + refused, 200);
        for i in 0..50 {
            let r = t.insert(&format!("/k{i}/status/v1/health"), 5);
            assert!(r.is_err() || t.nodes() <= 5 || t.nodes() <= cap);
        }
        assert_eq!(t.insert(&"/a".repeat(MAX_SEGMENTS + 1), CAP).err(), Some(Refused::TooDeep));
    }

    #[test]
    fn weird_paths_do_not_panic() {
        let mut t = PathTrie::default();
        let long = "x".repeat(10_000);
        let paths = [
            "",
            "/",
            "//",
            "///a",
            "/a//b",
            "/a/%2F/b",
            "/a%2Fb",
            "/{x}/}{",
            "/ünïcödé/ß/🦀",
            "/é/1",
            &long,
            "no-slash/1",
            "/a?b=c#d",
            "/@/%40/x@",
            "/v/V/v./v1..2",
        ];
        for p in paths {
            learn(&mut t, p);
            assert!(t.template_of(p).is_some(), "{p}");
        }
        assert_eq!(template(&t, "/a//b"), "/a//{id}", "empty segments are kept; a lone letter is a value");
        assert_eq!(template(&t, "/{x}/}{"), "/{id}/{id2}", "braces are no constant's");
        assert_eq!(render(&[Segment::Literal("{x}"), Segment::Literal("}{")]).path, "/%7Bx%7D/%7D%7B");
        assert_eq!(template(&t, &long), "/{id}");
        assert_eq!(template(&t, "/é/1"), "/é/{id}");
        assert_eq!(template(&t, ""), "/");
        for (tpl, _) in t.leaves() {
            assert!(tpl.params.iter().all(|(n, _)| n.chars().all(|c| c.is_ascii_alphanumeric())), "{tpl:?}");
        }
    }

    #[test]
    fn implausible_constants_are_values_at_first_sight() {
        let mut t = PathTrie::default();
        for p in [
            // Schemathesis' strings (wikimedia, ynab, instagram): escapes, spaces, lone letters.
            "/media/math/formula/y",
            "/media/math/formula/%C2%9D",
            "/media/math/render/png/%24%F2%98%8E%BA",
            "/budgets/1/transactions/aliquip%20culpa%20do",
            "/locations/K",
            "/tags/a,b",
            "/tags/-I",
            "/tags/x%09y/media/recent",
            // Constants of real APIs.
            "/users/@me",
            "/odata/$metadata",
            "/v1/documents:batchGet",
            "/.well-known/openid-configuration",
            "/index/_search",
            "/c/show",
            "/group/project/-/issues",
            "/api/status",
            "/api/health",
            "/ünïcödé",
        ] {
            learn(&mut t, p);
        }
        assert_eq!(
            templates(&t),
            [
                "/.well-known/openid-configuration",
                "/api/health",
                "/api/status",
                "/budgets/{budgetId}/transactions/{transactionId}",
                "/c/show",
                "/group/project/-/issues",
                "/index/_search",
                "/locations/{locationId}",
                "/media/math/formula/{formulaId}",
                "/media/math/render/png/{pngId}",
                "/odata/$metadata",
                "/tags/{tagId}",
                "/tags/{tagId}/media/recent",
                "/users/@me",
                "/v1/documents:batchGet",
                "/ünïcödé",
            ]
        );
        for s in ["%C3%86", "a b", "x\u{1}", "a,b", "(x)", "a=b", "-I", "~x", "x-", "x.", "a:", "@", "$"] {
            assert!(is_implausible_constant(s, true), "{s:?}");
        }
        for s in ["me", "v1", "2fa", "oauth2", "check-runs", "payment_intents", "getUser", "@me", "$batch", "a:b", "é"]
        {
            assert!(!is_implausible_constant(s, true), "{s:?}");
        }
        assert!(is_implausible_constant("y", false) && !is_implausible_constant("c", true));
    }

    #[test]
    fn values_with_an_extension_are_parameters_in_their_segment() {
        let mut t = PathTrie::default();
        for p in [
            // Discourse and the NYT books API.
            "/admin/badges.json",
            "/admin/badges/1.json",
            "/admin/badges/-2738.json",
            "/admin/users/5/suspend.json",
            "/admin/users/list/active.json",
            "/lists/names.json",
            "/lists/overview.json",
            "/lists/best-sellers/history.json",
            "/lists/2024-01-31/j%09.json",
            "/lists/%C3%86/0.json",
            "/groups/%C3%98F.json",
            "/groups/%C3%98F/members.json",
        ] {
            learn(&mut t, p);
        }
        assert_eq!(
            templates(&t),
            [
                "/admin/badges/{badgeId}.json",
                "/admin/badges.json",
                "/admin/users/list/active.json",
                "/admin/users/{userId}/suspend.json",
                "/groups/{groupId}.json",
                "/groups/{groupId}/members.json",
                "/lists/best-sellers/history.json",
                "/lists/names.json",
                "/lists/overview.json",
                "/lists/{listId}/{id}.json",
            ]
        );
        assert_eq!(template(&t, "/admin/badges/77.json"), "/admin/badges/{badgeId}.json");
        assert_eq!(template(&t, "/admin/badges/77.xml"), "no template for /admin/badges/77.xml");
        assert_eq!(t.template_of("/admin/badges/9.json").unwrap().0.params.len(), 1);
        // Word stems count towards the sibling bound like whole words do.
        let mut t = PathTrie::default();
        for name in WORDS.iter().take(40) {
            learn(&mut t, &format!("/groups/{name}.json"));
        }
        learn(&mut t, "/groups/overview.json");
        learn(&mut t, "/groups/search");
        assert_eq!(templates(&t), ["/groups/overview.json", "/groups/search", "/groups/{groupId}.json"]);
        assert_eq!(t.template_of("/groups/zz.json").unwrap().1 .0, 40);
    }

    #[test]
    fn words_next_to_a_free_text_parameter_with_the_same_children_join_it() {
        // Spotify: ids sent as lorem ipsum; a plain word is one of them when what follows it
        // also follows the parameter. A word seen only at the end of a path stays a literal
        // when it comes after the parameter (nothing tells it from `/media/popular`).
        for (order, want) in [
            ([0, 1, 2, 3], ["/artists/{artistId}", "/artists/{artistId}/albums"]),
            ([3, 2, 1, 0], ["/artists/dolor", "/artists/{artistId}/albums"]),
        ] {
            let paths =
                ["/artists/dolor", "/artists/dolor/albums", "/artists/ad%20nostrud/albums", "/artists/sit/albums"];
            let mut t = PathTrie::default();
            for i in order {
                learn(&mut t, paths[i]);
            }
            assert_eq!(templates(&t), want, "{order:?}");
            assert_eq!(t.template_of("/artists/x%20y/albums").unwrap().1 .0, 3);
        }
        let mut t = PathTrie::default();
        for p in [
            // Stripe: a parameter of opaque ids takes no words.
            "/v1/invoices/upcoming/lines",
            "/v1/invoices/in_1MtHbELkdIwHu7ixl4OzzPMv/lines",
            // A word that ends the path may be a constant.
            "/media/popular",
            "/media/a%20b/comments",
            // Known words stay (Instagram's `self`).
            "/users/self/media/recent",
            "/users/a%20b/media/recent",
            // GitHub: integers take no words either.
            "/repos/o/r/pulls/comments/7/reactions",
            "/repos/o/r/pulls/3/reactions",
        ] {
            learn(&mut t, p);
        }
        assert_eq!(
            templates(&t),
            [
                "/media/popular",
                "/media/{mediaId}/comments",
                "/repos/{owner}/{repo}/pulls/comments/{commentId}/reactions",
                "/repos/{owner}/{repo}/pulls/{pullId}/reactions",
                "/users/self/media/recent",
                "/users/{username}/media/recent",
                "/v1/invoices/upcoming/lines",
                "/v1/invoices/{invoiceId}/lines",
            ]
        );
    }

    /// A payload that answers records with these keys.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Prints(Vec<Print>);

    impl Merge for Prints {
        fn merge(&mut self, other: Prints) {
            for p in other.0 {
                if !self.0.contains(&p) {
                    self.0.push(p);
                }
            }
        }
    }

    /// Learns `path` answering the record of keys `print` (empty: nothing comparable), then
    /// folds alike siblings.
    fn answer_keys(t: &mut PathTrie<Prints>, path: &str, print: &[u64]) -> bool {
        let (leaf, _) = t.insert(path, CAP).unwrap();
        if !print.is_empty() && !leaf.0.iter().any(|p| p == print) {
            leaf.0.push(print.to_vec());
        }
        let folded = t.fold_alike(path, |p| p.0.clone());
        assert_eq!(t.nodes(), count(&t.root), "node count kept in step after {path}");
        folded
    }

    /// [`answer_keys`] with a one-key record `print` (0: nothing).
    fn answer(t: &mut PathTrie<Prints>, path: &str, print: u64) -> bool {
        answer_keys(t, path, if print == 0 { &[] } else { std::slice::from_ref(&print) })
    }

    fn print_templates(t: &PathTrie<Prints>) -> Vec<String> {
        t.leaves().into_iter().map(|(t, _)| t.path).collect()
    }

    #[test]
    fn words_answering_like_a_free_text_parameter_join_it() {
        // Spotify/YNAB: lorem words at the end of a path answer the same record as the
        // parameter that took free text; `popular` answers something else and stays.
        let mut t = PathTrie::default();
        assert!(!answer(&mut t, "/artists/ad%20nostrud", 7));
        assert!(!answer(&mut t, "/artists/popular", 9));
        assert!(answer(&mut t, "/artists/enim", 7));
        assert_eq!(print_templates(&t), ["/artists/popular", "/artists/{artistId}"]);
        // The word comes back to the parameter, even before it answers anything.
        assert!(!answer(&mut t, "/artists/enim", 0));
        assert_eq!(print_templates(&t), ["/artists/popular", "/artists/{artistId}"]);
        // A value answers the parameter's record seen with fewer optional keys; not one with
        // a key the parameter never had.
        assert!(!answer_keys(&mut t, "/u/a%20b.json", &[1, 2, 3, 4]));
        assert!(answer_keys(&mut t, "/u/mollit.json", &[1, 2, 4]));
        assert!(!answer_keys(&mut t, "/u/summary.json", &[1, 2, 5]));
        assert_eq!(template(&t, "/u/mollit.json"), "/u/{uId}.json");
        assert_eq!(template(&t, "/u/summary.json"), "/u/summary.json");
        // Deeper: the subtree's leaves at the same depth, and `{x}.json` slots (Discourse).
        assert!(!answer(&mut t, "/t/a%20b.json", 3));
        assert!(answer(&mut t, "/t/aute.json", 3));
        assert!(!answer(&mut t, "/t/latest.json", 3), "fixed words never fold");
        assert_eq!(
            print_templates(&t),
            [
                "/artists/popular",
                "/artists/{artistId}",
                "/t/latest.json",
                "/t/{tId}.json",
                "/u/summary.json",
                "/u/{uId}.json"
            ]
        );
        // A parameter of numbers takes a word only with two more alike (Stripe's `upcoming`
        // answers an invoice too, GitHub's `releases/latest` a release).
        assert!(!answer(&mut t, "/v1/invoices/in_1MtHbELkdIwHu7ixl4OzzPMv", 5));
        assert!(!answer(&mut t, "/v1/invoices/upcoming", 5));
        assert!(!answer(&mut t, "/repos/o/r/releases/12", 6));
        assert!(!answer(&mut t, "/repos/o/r/releases/newest", 6));
        let all = print_templates(&t);
        for want in ["/v1/invoices/upcoming", "/repos/{owner}/{repo}/releases/newest"] {
            assert!(all.iter().any(|p| p == want), "{want} in {all:?}");
        }
    }

    fn count_t(t: &PathTrie<Prints>) -> usize {
        count(&t.root)
    }

    #[test]
    fn three_siblings_answering_alike_are_values_of_one_parameter() {
        // Wikimedia: enum values in the middle of a path, answering the same record below,
        // fold from the last one back.
        let mut t = PathTrie::default();
        for ed in ["all-editor-types", "group-bot", "name-bot"] {
            for pt in ["all-page-types", "non-content"] {
                for g in ["daily", "monthly"] {
                    answer(&mut t, &format!("/metrics/editors/aggregate/en%2Ewiki/{ed}/{pt}/{g}/20200101/20200201"), 4);
                }
            }
        }
        assert_eq!(print_templates(&t), ["/metrics/editors/aggregate/{aggregateId}/{id}/{id2}/{id3}/{id4}/{id5}"]);
        assert_eq!(t.nodes(), count_t(&t));
        // Sparse traffic (few combinations seen): after a value, the first position folds,
        // then the next ones (now after a value too); `content` (a known word) after it
        // keeps it apart.
        let mut t = PathTrie::default();
        for p in [
            "all-editor-types/all-page-types/daily",
            "group-bot/non-content/monthly",
            "name-bot/all-page-types/monthly",
        ] {
            answer(&mut t, &format!("/metrics/edits/aggregate/en%2Ewiki/{p}/20200101/20200201"), 4);
        }
        assert_eq!(print_templates(&t), ["/metrics/edits/aggregate/{aggregateId}/{id}/{id2}/{id3}/{id4}/{id5}"]);
        // Common words among the values (`content`, `daily`, `user`) fold too: after a value,
        // leading through a range of values (`{start}/{end}`) to what their siblings lead to.
        let mut t = PathTrie::default();
        for p in ["all-editor-types/content/daily", "group-bot/non-content/monthly", "name-bot/all-page-types/monthly"]
        {
            answer(&mut t, &format!("/metrics/edits/aggregate/en%2Ewiki/{p}/20200101/20200201"), 4);
        }
        assert_eq!(print_templates(&t), ["/metrics/edits/aggregate/{aggregateId}/{id}/{id2}/{id3}/{id4}/{id5}"]);
        assert_eq!(template(&t, "/metrics/edits/aggregate/x%2Ey/user/content/daily/1/2"), print_templates(&t)[0]);
        // Not before a value, nor without a range of values after them.
        let mut t = PathTrie::default();
        for p in ["/stats/users/2020/2021", "/stats/events/2020/2021", "/stats/content/2020/2021"] {
            assert!(!answer(&mut t, p, 4), "{p}");
        }
        for p in ["/o/x%20y/user/content/3", "/o/x%20y/team/content/3", "/o/x%20y/org/content/3"] {
            assert!(!answer(&mut t, p, 4), "{p}");
        }
        assert_eq!(t.leaves().len(), 6);
        // A pair answering alike right below (or one below) stays: two constants may.
        let mut t = PathTrie::default();
        for p in ["/feed/onthisday/list", "/feed/featured/list", "/feed/random/list/more", "/feed/recent/list/more"] {
            assert!(!answer(&mut t, p, 4));
        }
        assert_eq!(t.nodes(), count_t(&t));
    }

    #[test]
    fn constants_answering_alike_stay_apart() {
        let mut t = PathTrie::default();
        // GitHub: followers and following both answer simple users: known words.
        for p in ["/users/octocat/followers", "/users/octocat/following", "/users/octocat/subscriptions"] {
            assert!(!answer(&mut t, p, 8));
        }
        // Two unknown constants answering the same record are not enough.
        for p in ["/orgs/o/public_members", "/orgs/o/outside_collaborators"] {
            assert!(!answer(&mut t, p, 8));
        }
        // Issues and pulls answer different records (pulls have more keys).
        for (p, f) in [("/repos/o/r/issue/3", 1), ("/repos/o/r/pull/3", 2), ("/repos/o/r/commit/3", 11)] {
            assert!(!answer(&mut t, p, f));
        }
        // Wikimedia: top-level resources share the wrapped record they answer at one place,
        // but each answers others the rest do not.
        for (p, f) in [
            ("/metrics/edits/aggregate/20200101", 31),
            ("/metrics/edits/per-page/20200101", 32),
            ("/metrics/editors/aggregate/20200101", 31),
            ("/metrics/editors/top-by-edits/20200101", 33),
            ("/metrics/pageviews/aggregate/20200101", 31),
            ("/metrics/pageviews/top/20200101", 34),
        ] {
            assert!(!answer(&mut t, p, f), "{p}");
        }
        // GitHub: constants after a value answering alike, followed by constants.
        for p in ["actions", "dependabot", "codespaces"] {
            assert!(!answer(&mut t, &format!("/repos/o/r/{p}/secrets/NAME_{p}"), 41));
            assert!(!answer(&mut t, &format!("/repos/o/r/{p}/secrets"), 42));
        }
        assert_eq!(template(&t, "/repos/o/r/dependabot/secrets"), "/repos/{owner}/{repo}/dependabot/secrets");
        // Siblings alike only pairwise (a~b, b~c by other fingerprints) do not fold.
        for (p, f) in [("/things/a%20b/alpha", 21), ("/things/a%20b/beta", 21), ("/things/a%20b/gamma", 22)] {
            assert!(!answer(&mut t, p, f));
        }
        assert!(!answer(&mut t, "/things/a%20b/beta", 22));
        assert_eq!(
            print_templates(&t),
            [
                "/metrics/editors/aggregate/{aggregateId}",
                "/metrics/editors/top-by-edits/{topByEditId}",
                "/metrics/edits/aggregate/{aggregateId}",
                "/metrics/edits/per-page/{perPageId}",
                "/metrics/pageviews/aggregate/{aggregateId}",
                "/metrics/pageviews/top/{topId}",
                "/orgs/{org}/outside_collaborators",
                "/orgs/{org}/public_members",
                "/repos/{owner}/{repo}/actions/secrets",
                "/repos/{owner}/{repo}/actions/secrets/NAME_actions",
                "/repos/{owner}/{repo}/codespaces/secrets",
                "/repos/{owner}/{repo}/codespaces/secrets/NAME_codespaces",
                "/repos/{owner}/{repo}/commit/{commitId}",
                "/repos/{owner}/{repo}/dependabot/secrets",
                "/repos/{owner}/{repo}/dependabot/secrets/NAME_dependabot",
                "/repos/{owner}/{repo}/issue/{issueId}",
                "/repos/{owner}/{repo}/pull/{pullId}",
                "/things/{thingId}/alpha",
                "/things/{thingId}/beta",
                "/things/{thingId}/gamma",
                "/users/octocat/followers",
                "/users/octocat/following",
                "/users/octocat/subscriptions",
            ]
        );
    }

    /// GitHub's constants under `/repos/{owner}/{repo}` that are not common words.
    const REPO_CONSTANTS: [&str; 21] = [
        "autolinks",
        "automated-security-fixes",
        "check-runs",
        "check-suites",
        "code-scanning",
        "codeowners",
        "codespaces",
        "community",
        "dependabot",
        "dependency-graph",
        "dispatches",
        "installation",
        "interaction-limits",
        "lfs",
        "merge-upstream",
        "secret-scanning",
        "stargazers",
        "tarball",
        "traffic",
        "vulnerability-alerts",
        "zipball",
    ];

    #[test]
    fn many_constants_called_again_stay_constants() {
        // Past the sibling bound, constants that clients call again stay; values seen once
        // each (the test above) fold.
        let mut t = PathTrie::default();
        for c in REPO_CONSTANTS {
            for _ in 0..2 {
                assert!(!learn(&mut t, &format!("/repos/o/r/{c}")).retemplated, "{c}");
            }
        }
        assert_eq!(template(&t, "/repos/o/r/traffic"), "/repos/{owner}/{repo}/traffic");
        assert_eq!(t.leaves().len(), 21);
        // The same bound with each called once: folded, as values would be.
        let mut t = PathTrie::default();
        let folds: usize =
            REPO_CONSTANTS.iter().map(|c| usize::from(learn(&mut t, &format!("/repos/o/r/{c}")).retemplated)).sum();
        assert_eq!(folds, 1);
        assert_eq!(t.leaves().len(), 1);
        // Constants called again, then values each once: the values fold with what is seen
        // once, the constants seen twice are folded with them (a fold cannot keep some).
        let mut t = PathTrie::default();
        for c in &REPO_CONSTANTS[..10] {
            learn(&mut t, &format!("/x/y/{c}"));
            learn(&mut t, &format!("/x/y/{c}"));
        }
        let folded = NAMES.iter().take(40).any(|n| learn(&mut t, &format!("/x/y/{n}")).retemplated);
        assert!(folded, "values keep arriving: the share seen once grows until it is most");
        // The root's bound holds everywhere, called again or not.
        let mut t = PathTrie::default();
        let mut folded = false;
        for (i, n) in WORDS.iter().flat_map(|w| [format!("{w}x"), format!("{w}yy")]).enumerate() {
            for _ in 0..3 {
                folded |= learn(&mut t, &format!("/q/{n}")).retemplated;
            }
            assert_eq!(folded, i >= MAX_TOP_SIBLINGS, "{i}");
        }
    }

    #[test]
    fn a_word_seen_before_a_free_text_parameter_joins_it_later() {
        // GitHub's `/gitignore/templates/{name}`: Schemathesis sent `irure` before any value
        // that could only be one; the parameter, made later, takes it back when it answers
        // alike.
        let mut t = PathTrie::default();
        assert!(!answer(&mut t, "/gitignore/templates/irure", 7));
        assert!(!answer(&mut t, "/gitignore/templates/C%2B%2B", 6), "answers something else yet");
        assert_eq!(print_templates(&t), ["/gitignore/templates/irure", "/gitignore/templates/{templateId}"]);
        assert!(answer(&mut t, "/gitignore/templates/commodo%20sint", 7));
        assert_eq!(print_templates(&t), ["/gitignore/templates/{templateId}"]);
        assert_eq!(t.nodes(), count_t(&t));
        // A constant answering something else stays beside the parameter.
        assert!(!answer(&mut t, "/gitignore/templates/popular", 9));
        assert!(!answer(&mut t, "/gitignore/templates/a%20b", 7));
        assert_eq!(print_templates(&t), ["/gitignore/templates/popular", "/gitignore/templates/{templateId}"]);
    }

    #[test]
    fn weak_answers_compare_but_never_make_an_enum() {
        let b204 = [WEAK, 204];
        // `PUT /user/following/{username}` answers 204: `Infinity` answers as the parameter
        // that took free text does.
        let mut t = PathTrie::default();
        assert!(!answer_keys(&mut t, "/user/following/%C3%A5", &b204));
        assert!(answer_keys(&mut t, "/user/following/Infinity", &b204));
        assert_eq!(print_templates(&t), ["/user/following/{followingId}"]);
        // Three constants that all answer 204 without a parameter beside them stay apart.
        let mut t = PathTrie::default();
        for c in ["lfs", "vulnerability-alerts", "automated-security-fixes"] {
            assert!(!answer_keys(&mut t, &format!("/repos/o/r/{c}"), &b204), "{c}");
        }
        assert_eq!(t.leaves().len(), 3);
    }

    #[test]
    fn a_trie_round_trips_through_json() {
        let mut t = PathTrie::default();
        learn(&mut t, "/users/42/posts");
        learn(&mut t, "/badges/42.json");
        learn(&mut t, "/repos/a/b");
        let json = serde_json::to_string(&t).unwrap();
        let back: PathTrie<Count> = serde_json::from_str(&json).unwrap();
        assert_eq!(templates(&back), templates(&t));
        assert_eq!(back.nodes(), t.nodes());
    }

    #[test]
    fn shapes_and_words() {
        assert_eq!(classify("42"), Kind::Integer);
        assert_eq!(classify("v1"), Kind::Word);
        assert_eq!(classify("oauth2"), Kind::Word);
        assert_eq!(classify("sha256"), Kind::Word);
        assert_eq!(classify("check-runs"), Kind::Word);
        assert_eq!(classify("my-post-2021"), Kind::Word);
        assert_eq!(classify("deadbeef"), Kind::Word, "hex words need a digit");
        assert_eq!(classify("user1234"), Kind::Opaque);
        assert_eq!(classify("dQw4w9WgXcQ"), Kind::Opaque);
        assert_eq!(classify("2024-13-01"), Kind::Word);
        assert_eq!(classify("::1"), Kind::Ipv6);
        assert!(KNOWN_WORDS.windows(2).all(|w| w[0] < w[1]), "sorted, for binary search");
        assert_eq!(singular("categories"), "category");
        assert_eq!(singular("statuses"), "status");
        assert_eq!(singular("People"), "Person");
        assert_eq!(singular("s"), "s");
        assert_eq!(singular("address"), "address");
    }
}
