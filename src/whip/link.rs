//! The STUN/TURN servers a WHIP endpoint names in its `Link` headers (RFC 9725 section 4.6):
//!
//! ```text
//! Link: <stun:stun.example.net>; rel="ice-server"
//! Link: <turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p"; credential-type="password"
//! ```
//!
//! Several may share one header, comma-separated, and quoted values may hold commas and
//! backslash escapes (RFC 8288 / RFC 9110 quoted-string), so this splits by hand, aware of
//! quotes. Anything unusable (another `rel`, a bad URL, TURN without credentials, a
//! credential type other than `password`) is skipped: the server list is a hint, and the
//! user's own `--stun/--turn` still apply.

use crate::rtc::IceServer;

/// Most servers taken from one response: a handful is normal, more is an attack on our
/// ICE agent's time.
pub const MAX_SERVERS: usize = 8;

/// The usable ICE servers in `values` (each a `Link` header's value).
pub fn ice_servers<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    let mut out = Vec::new();
    for value in values {
        for link in split_outside_quotes(value, ',') {
            if out.len() == MAX_SERVERS {
                return out;
            }
            if let Some(server) = parse_one(link) {
                out.push(server);
            }
        }
    }
    out
}

/// One `<uri>; param=value; ...` link, if it is a usable ice-server.
fn parse_one(link: &str) -> Option<IceServer> {
    let link = link.trim();
    let rest = link.strip_prefix('<')?;
    let (uri, params) = rest.split_once('>')?;
    let mut rel = None;
    let mut username = None;
    let mut credential = None;
    let mut credential_type = None;
    for param in split_outside_quotes(params, ';') {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match name.trim().to_ascii_lowercase().as_str() {
            "rel" => rel = Some(value),
            "username" => username = Some(value),
            "credential" => credential = Some(value),
            "credential-type" => credential_type = Some(value),
            _ => {}
        }
    }
    // `rel` may list several relation types.
    if !rel?.split_ascii_whitespace().any(|r| r == "ice-server") {
        return None;
    }
    if credential_type.is_some_and(|t| t != "password") {
        tracing::debug!("skipping ICE server with credential-type other than password");
        return None;
    }
    match IceServer::new(uri.trim(), username, credential) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!("skipping ICE server from Link header: {e}");
            None
        }
    }
}

/// Splits `s` at `sep` where it is not inside a quoted string (or `<...>`).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped, mut angle) = (0, false, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A quoted-string's content with escapes resolved; a token as it is.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"') else {
        return v.to_owned();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stun_and_turn_from_separate_and_joined_headers() {
        let servers = ice_servers([
            r#"<stun:stun.example.net>; rel="ice-server""#,
            r#"<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="my,pa\ss"; credential-type="password", <https://example.net/x>; rel="next""#,
        ]);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].url, "stun:stun.example.net");
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].url, "turn:turn.example.net?transport=udp");
        assert_eq!(servers[1].username.as_deref(), Some("user"));
        assert_eq!(servers[1].credential.as_deref(), Some("my,pass"));
        let plain = ice_servers([
            r#"<turn:t.example.net>; rel=ice-server; username=u; credential="a,b;c""#,
        ]);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].credential.as_deref(), Some("a,b;c"));
    }

    #[test]
    fn skips_what_it_cannot_use() {
        let servers = ice_servers([
            r#"<turn:t.example.net>; rel="ice-server""#, // no credentials
            r#"<turn:t.example.net>; rel="ice-server"; username="u"; credential="c"; credential-type="oauth""#,
            r#"<urn:ietf:params:whip:ext:example>; rel="urn:ietf:params:whip:ext:example""#,
            r#"<not a url>; rel="ice-server""#,
            r#"garbage without angle brackets"#,
            "",
        ]);
        assert!(servers.is_empty(), "{servers:?}");
    }

    #[test]
    fn takes_at_most_a_handful() {
        let many = vec![r#"<stun:s.example.net>; rel="ice-server""#; 50];
        assert_eq!(ice_servers(many).len(), MAX_SERVERS);
    }
}
