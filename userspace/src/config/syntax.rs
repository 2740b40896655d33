//! Names the key near a TOML syntax error. The parser's error has a span but no key, and a
//! broken document has no tree to ask, so this reads table headers line by line. It is a
//! best effort (a header inside a multi-line string fools it); the line number stays exact.

/// Dotted key path for the line holding byte `offset`, e.g. `service[1].port`.
pub(super) fn key_near(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);

    // Array-of-tables header name -> how many elements seen so far.
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut header: Option<String> = None;
    for line in text[..line_end].lines() {
        let trimmed = line.trim_start();
        if let Some(name) = bracketed(trimmed, "[[", "]]") {
            // A new element of `service` restarts the count of `service.backend`.
            let nested = format!("{name}.");
            counts.retain(|(n, _)| !n.starts_with(&nested));
            match counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => counts.push((name.clone(), 1)),
            }
            header = Some(name);
        } else if let Some(name) = bracketed(trimmed, "[", "]") {
            header = Some(name);
        }
    }

    let current = text[line_start..line_end].trim_start();
    let prefix = header.map(|h| with_indices(&h, &counts));
    if current.starts_with('[') {
        return prefix.unwrap_or_default();
    }
    let key = current
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.contains(['"', '\'', '#']))
        .unwrap_or_default();
    match (prefix, key) {
        (Some(p), "") => p,
        (Some(p), k) => format!("{p}.{k}"),
        (None, k) => k.to_owned(),
    }
}

fn bracketed(line: &str, open: &str, close: &str) -> Option<String> {
    let rest = line.strip_prefix(open)?;
    let end = rest.find(close)?;
    let name: String = rest[..end]
        .split('.')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(".");
    (!name.is_empty() && !name.starts_with('[')).then_some(name)
}

/// `service.backend` -> `service[1].backend[0]` using the element counts seen so far.
fn with_indices(header: &str, counts: &[(String, usize)]) -> String {
    let mut path = String::new();
    let mut name = String::new();
    for part in header.split('.') {
        if !name.is_empty() {
            name.push('.');
            path.push('.');
        }
        name.push_str(part);
        path.push_str(part);
        if let Some((_, count)) = counts.iter().find(|(n, _)| *n == name) {
            path.push_str(&format!("[{}]", count - 1));
        }
    }
    path
}
