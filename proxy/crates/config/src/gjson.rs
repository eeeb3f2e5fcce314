//! The part of gjson's path syntax that Tyk's `error_overrides` `match.body_field` uses
//! (gateway/error_overrides.go `matchBodyField`: `gjson.GetBytes(body, field).String()`):
//! dotted keys with `\` escapes, and array indexes. Like gjson it reads only as far as the value
//! it looks for, so a body cut at Tyk's 4096 bytes still answers for a value before the cut.
//! Wildcards, `#` queries, `@` modifiers, `|` pipes and `!` literals are refused at load
//! ([`parse_path`]), never read differently. Must not: allocate per byte or panic on any input.

/// A body_field path, split into its keys (escapes removed); `Err` names what is not supported.
pub(crate) fn parse_path(path: &str) -> Result<Vec<String>, &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("ends in a lone backslash"),
            },
            '.' => parts.push(std::mem::take(&mut cur)),
            '*' | '?' => return Err("gjson wildcards (* ?) are not supported"),
            '#' => return Err("gjson # array queries are not supported"),
            '|' => return Err("gjson | pipes are not supported"),
            '@' | '!' if cur.is_empty() => return Err("gjson @ modifiers and ! literals are not supported"),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    if parts.iter().any(String::is_empty) {
        return Err("has an empty key (gjson reads `..` and a leading or trailing dot differently)");
    }
    Ok(parts)
}

/// gjson's `Get(json, path).String()`, or `None` when the path does not exist: a string
/// unescaped, an integer as written, another number as Go formats it, `true`/`false`, `""` for
/// null, an object or array as its raw text.
pub(crate) fn get_string(json: &[u8], path: &[String]) -> Option<String> {
    let mut i = ws(json, 0);
    for key in path {
        match *json.get(i)? {
            b'{' => i = find_key(json, i + 1, key)?,
            b'[' => {
                let index: usize = key.bytes().all(|b| b.is_ascii_digit()).then(|| key.parse().ok())??;
                i = find_index(json, i + 1, index)?;
            }
            _ => return None,
        }
    }
    let end = skip_value(json, i)?;
    let raw = &json[i..end];
    Some(match raw[0] {
        b'"' => unescape(&raw[1..raw.len() - 1])?,
        b'n' => String::new(),
        b'-' | b'0'..=b'9' => {
            let text = std::str::from_utf8(raw).ok()?;
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                text.to_string()
            } else {
                format!("{}", text.parse::<f64>().ok()?)
            }
        }
        _ => String::from_utf8_lossy(raw).into_owned(),
    })
}

fn ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// In an object whose `{` is before `i`: where the first member named `key` has its value.
fn find_key(json: &[u8], mut i: usize, key: &str) -> Option<usize> {
    loop {
        i = ws(json, i);
        match *json.get(i)? {
            b'}' => return None,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_value(json, i)?;
        let name = &json[i + 1..key_end - 1];
        i = ws(json, key_end);
        if *json.get(i)? != b':' {
            return None;
        }
        i = ws(json, i + 1);
        let matches =
            if name.contains(&b'\\') { unescape(name).is_some_and(|n| n == key) } else { name == key.as_bytes() };
        if matches {
            return json.get(i).map(|_| i);
        }
        i = skip_value(json, i)?;
    }
}

/// In an array whose `[` is before `i`: where element `index` starts.
fn find_index(json: &[u8], mut i: usize, index: usize) -> Option<usize> {
    let mut n = 0;
    loop {
        i = ws(json, i);
        match *json.get(i)? {
            b']' => return None,
            b',' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if n == index {
            return Some(i);
        }
        i = skip_value(json, i)?;
        n += 1;
    }
}

/// The end of the value that starts at `i` (`None`: cut off or not a value).
fn skip_value(json: &[u8], i: usize) -> Option<usize> {
    match *json.get(i)? {
        b'"' => {
            let mut j = i + 1;
            loop {
                match *json.get(j)? {
                    b'\\' => j += 2,
                    b'"' => return Some(j + 1),
                    _ => j += 1,
                }
            }
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *json.get(j)? {
                    b'"' => {
                        j = skip_value(json, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while json.get(j).is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace()) {
                j += 1;
            }
            // A scalar that runs to the end of the bytes may be cut off.
            (j > i && j < json.len()).then_some(j)
        }
    }
}

/// A JSON string's contents unescaped (`None`: a broken escape).
fn unescape(s: &[u8]) -> Option<String> {
    if !s.contains(&b'\\') {
        return Some(String::from_utf8_lossy(s).into_owned());
    }
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut i = 0;
    let hex =
        |at: usize| -> Option<u32> { u32::from_str_radix(std::str::from_utf8(s.get(at..at + 4)?).ok()?, 16).ok() };
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let e = *s.get(i + 1)?;
        i += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let mut cp = hex(i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&cp) && s.get(i) == Some(&b'\\') && s.get(i + 1) == Some(&b'u') {
                    if let Some(lo) = hex(i + 2).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                char::from_u32(cp).unwrap_or('\u{fffd}')
            }
            _ => return None,
        };
        let mut b = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(json: &str, path: &str) -> Option<String> {
        get_string(json.as_bytes(), &parse_path(path).unwrap())
    }

    #[test]
    fn dotted_paths_indexes_and_values_as_gjson_strings() {
        let j = r#"{"error": {"type": "database_timeout", "code": 42, "ratio": 1.50, "ok": true,
                    "none": null, "list": [{"a": "x"}, {"a": "y\n\u00e9"}], "o": {"k": [1, 2]}},
                    "a.b": "dotted", "error": "second"}"#;
        assert_eq!(get(j, "error.type").as_deref(), Some("database_timeout"));
        assert_eq!(get(j, "error.code").as_deref(), Some("42"));
        assert_eq!(get(j, "error.ratio").as_deref(), Some("1.5"));
        assert_eq!(get(j, "error.ok").as_deref(), Some("true"));
        assert_eq!(get(j, "error.none").as_deref(), Some(""));
        assert_eq!(get(j, "error.list.1.a").as_deref(), Some("y\né"));
        assert_eq!(get(j, "error.o").as_deref(), Some(r#"{"k": [1, 2]}"#));
        assert_eq!(get(j, r"a\.b").as_deref(), Some("dotted"));
        assert_eq!(get(j, "error.missing"), None);
        assert_eq!(get(j, "error.type.x"), None);
        assert_eq!(get("not json", "a"), None);
        assert_eq!(get("", "a"), None);
    }

    /// Like gjson, a body cut short still answers for what comes before the cut.
    #[test]
    fn a_cut_body_answers_before_the_cut_only() {
        let j = r#"{"error": "first", "pad": "xxxxxxxx", "target": "find_me"#;
        assert_eq!(get(j, "error").as_deref(), Some("first"));
        assert_eq!(get(j, "target"), None);
        assert_eq!(get(r#"{"n": 12"#, "n"), None, "a number at the cut may be longer");
    }

    #[test]
    fn unsupported_syntax_is_refused() {
        for p in ["a.*", "a?", "list.#", "a|b", "@this", "!true", "", "a..b", ".a"] {
            assert!(parse_path(p).is_err(), "{p}");
        }
        assert_eq!(parse_path(r"a\*b.c").unwrap(), ["a*b", "c"]);
    }
}
