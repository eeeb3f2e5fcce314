//! Path templates learned from observed paths: a segment trie per API, where segments that vary
//! (numbers, UUIDs, hashes, opaque ids, dates, e-mails, or literal siblings too many to be
//! constants) become one parameter child, named after its parent (`/users/42` →
//! `/users/{userId}`). Each template's leaf carries the caller's payload (`T`), merged when a
//! re-templating folds literal subtrees into a parameter, so nothing counted before is lost.
//!
//! Must not: grow without bound (the caller passes a node cap; a position that would grow past
//! it is collapsed into a parameter, and the caller is told), recurse deeper than
//! [`MAX_SEGMENTS`], or panic on any path (empty segments, escapes, unicode, long segments).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's literal children that are not known words, versions or conventions become one
/// parameter when there are more than this many. Real APIs put at most a dozen or so
/// non-trivial constant children under one resource (most of the common ones are in
/// [`KNOWN_WORDS`] and never count), while id-like values (usernames, slugs) pass any bound
/// quickly. Compound words (`check-runs`, `payment_intents`) count half: they are how
/// constants are spelled, rarely how values are.
pub const MAX_LITERAL_SIBLINGS: usize = 16;

/// The same bound for the children of the root, of a version segment (`v1`) and of `api`:
/// these list an API's top-level resources (Stripe has ~50 under `/v1`, GitHub ~40 under `/`)
/// and are almost never ids.
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
    /// On a parameter node: the kinds of value seen.
    #[serde(default, rename = "k", skip_serializing_if = "is_zero")]
    kinds: Kinds,
    /// Every literal child that is not fixed goes to the parameter.
    #[serde(default, rename = "c", skip_serializing_if = "is_false")]
    collapsed: bool,
    #[serde(default, rename = "v", skip_serializing_if = "Option::is_none")]
    leaf: Option<T>,
}

fn is_zero(k: &Kinds) -> bool {
    *k == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { lit: BTreeMap::new(), param: None, kinds: 0, collapsed: false, leaf: None }
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
        for seg in segs {
            let kind = classify(seg);
            let fixed = kind == Kind::Word && is_fixed(seg);
            let to_param = if kind != Kind::Word {
                true
            } else if fixed || node.lit.contains_key(seg) {
                false
            } else if node.collapsed {
                true
            } else if *nodes >= max_nodes {
                *nodes = adjust(*nodes, collapse(node));
                learned.guard = true;
                true
            } else {
                node.lit.insert(seg.to_owned(), Node::default());
                *nodes += 1;
                learned.new_nodes += 1;
                if over_limit(node, top) {
                    *nodes = adjust(*nodes, collapse(node));
                    learned.retemplated = true;
                    true
                } else {
                    false
                }
            };
            forced = forced.saturating_sub(1);
            if to_param {
                if node.param.is_none() {
                    if *nodes >= max_nodes {
                        return Err(Refused::NodeCap);
                    }
                    node.param = Some(Box::new(Node { collapsed: forced > 0, ..Node::default() }));
                    *nodes += 1;
                    learned.new_nodes += 1;
                }
                let Some(p) = node.param.as_deref_mut() else { return Err(Refused::NodeCap) };
                p.kinds |= kind.bit();
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
                if forced > 0 {
                    node.collapsed = true;
                }
            }
        }
        Ok((node.leaf.get_or_insert_with(T::default), learned))
    }

    /// The payload of the template `path` falls under, if any.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut T> {
        let segs = segments(path);
        let choices = route(&self.root, &segs)?;
        let mut node = &mut self.root;
        for (seg, literal) in segs.iter().zip(choices) {
            node = if literal { node.lit.get_mut(*seg)? } else { node.param.as_deref_mut()? };
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
        for (seg, literal) in segs.iter().zip(choices) {
            if literal {
                let (k, n) = node.lit.get_key_value(*seg)?;
                out.push(Segment::Literal(k.as_str()));
                node = n;
            } else {
                node = node.param.as_deref()?;
                out.push(Segment::Param(node.kinds));
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
    if let Some(p) = &node.param {
        stack.push(Segment::Param(p.kinds));
        walk(p, stack, out);
        stack.pop();
    }
}

/// Which child to take at each segment (`true`: the literal) to reach a leaf; constants are
/// tried first. A depth-first search of a tree visits each node at most once.
fn route<T>(node: &Node<T>, segs: &[&str]) -> Option<Vec<bool>> {
    let Some((seg, rest)) = segs.split_first() else {
        return node.leaf.is_some().then(Vec::new);
    };
    let via = |child: &Node<T>, literal: bool| {
        route(child, rest).map(|mut v| {
            v.insert(0, literal);
            v
        })
    };
    node.lit.get(*seg).and_then(|c| via(c, true)).or_else(|| node.param.as_deref().and_then(|p| via(p, false)))
}

/// Whether `node` has more literal children that may be values than its bound allows.
fn over_limit<T>(node: &Node<T>, top: bool) -> bool {
    let bound = if top { MAX_TOP_SIBLINGS } else { MAX_LITERAL_SIBLINGS };
    let weight: usize = node.lit.keys().filter(|k| !is_fixed(k)).map(|k| if is_compound(k) { 1 } else { 2 }).sum();
    weight > 2 * bound
}

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
    let values: Vec<String> = node.lit.keys().filter(|k| !is_fixed(k)).cloned().collect();
    if values.is_empty() {
        return (before, before);
    }
    let mut param = node.param.take().map_or_else(Node::default, |p| *p);
    for key in values {
        if let Some(child) = node.lit.remove(&key) {
            param.kinds |= classify(&key).bit();
            merge_node(&mut param, child);
        }
    }
    settle(&mut param);
    node.param = Some(Box::new(param));
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
    into.collapsed |= from.collapsed;
    match (&mut into.leaf, from.leaf) {
        (Some(a), Some(b)) => a.merge(b),
        (a @ None, b) => *a = b,
        (Some(_), None) => {}
    }
    for (key, child) in from.lit {
        if into.collapsed && !is_fixed(&key) {
            let param = into.param.get_or_insert_with(Box::default);
            param.kinds |= classify(&key).bit();
            merge_node(param, child);
        } else if let Some(existing) = into.lit.get_mut(&key) {
            merge_node(existing, child);
        } else {
            into.lit.insert(key, child);
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
    1 + node.lit.values().map(count).sum::<usize>() + node.param.as_deref().map_or(0, count)
}

/// Names the parameters of a template and writes it out.
pub fn render(segs: &[Segment<'_>]) -> Template {
    let mut path = String::new();
    let mut params: Vec<(String, Kinds)> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        path.push('/');
        match seg {
            Segment::Literal(s) => path.push_str(&s.replace('{', "%7B").replace('}', "%7D")),
            Segment::Param(kinds) => {
                let base = param_name(segs, i, *kinds, params.last().map(|(n, _)| n.as_str()));
                let name = unique(&base, &params);
                path.push('{');
                path.push_str(&name);
                path.push('}');
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

    fn template(t: &PathTrie<Count>, path: &str) -> String {
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
        assert_eq!(template(&t, "/a//b"), "/a//b");
        assert_eq!(template(&t, "/{x}/}{"), "/%7Bx%7D/%7D%7B");
        assert_eq!(template(&t, &long), "/{id}");
        assert_eq!(template(&t, "/é/1"), "/é/{id}");
        assert_eq!(template(&t, ""), "/");
        for (tpl, _) in t.leaves() {
            assert!(tpl.params.iter().all(|(n, _)| n.chars().all(|c| c.is_ascii_alphanumeric())), "{tpl:?}");
        }
    }

    #[test]
    fn a_trie_round_trips_through_json() {
        let mut t = PathTrie::default();
        learn(&mut t, "/users/42/posts");
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
