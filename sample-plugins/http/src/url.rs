//! Just enough URL parsing for an HTTP GET: scheme, authority, path and query.

/// An `http`/`https` URL split into the parts a wasi:http request is built from.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// True for `https`, false for `http`.
    pub https: bool,
    /// `host` or `host:port`, the host lower-cased.
    pub authority: String,
    /// Path and query, starting with `/`, without the fragment, percent-encoded.
    pub path_with_query: String,
}

/// Split `url` into a [`Target`]; the error says what is wrong with it.
pub fn parse(url: &str) -> Result<Target, String> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "'{url}' is not an absolute URL: it must start with http:// or https://"
        ));
    };
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(format!("only http and https URLs are supported, not '{scheme}'")),
    };
    if rest.chars().any(char::is_control) {
        return Err("a URL cannot contain control characters such as line breaks".into());
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    // The fragment names a place inside the document; it is never sent to the server.
    let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
    let path_with_query = match tail {
        "" => "/".to_string(),
        query if query.starts_with('?') => format!("/{query}"),
        path => path.to_string(),
    };
    Ok(Target {
        https,
        authority: authority_of(authority)?,
        path_with_query: encode(&path_with_query),
    })
}

/// Check `host[:port]` and normalise it (lower-case host, no leading zeros in the port).
fn authority_of(authority: &str) -> Result<String, String> {
    if authority.is_empty() {
        return Err("the URL has no host".into());
    }
    if authority.contains('@') {
        return Err("URLs with a user name or password (user@host) are not supported".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal, e.g. [::1]:8080.
        let Some((address, after)) = rest.split_once(']') else {
            return Err("the host has a '[' without its closing ']'".into());
        };
        if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
        {
            return Err(format!("'[{address}]' is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or_else(|| {
                format!("unexpected '{after}' after the IPv6 address; expected ':port'")
            })?),
        };
        (format!("[{}]", address.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        if let Some(c) = host.chars().find(|&c| !(c.is_ascii_alphanumeric() || "-._".contains(c))) {
            return Err(if c.is_ascii() {
                format!("'{c}' is not allowed in a host name")
            } else {
                "host names must be ASCII; write international names in punycode (xn--…)".into()
            });
        }
        (host.to_ascii_lowercase(), port)
    };
    let Some(port) = port else { return Ok(host) };
    // `u16::from_str` would also take "+80"; only digits are a port.
    match port.parse::<u16>() {
        Ok(number) if number != 0 && port.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{host}:{number}"))
        }
        _ => Err(format!("'{port}' is not a port number (1-65535)")),
    }
}

/// Percent-encode what may not appear raw in a request target (spaces, non-ASCII,
/// a few reserved symbols); existing `%XX` escapes are kept as they are.
fn encode(path_with_query: &str) -> String {
    let mut encoded = String::with_capacity(path_with_query.len());
    for &b in path_with_query.as_bytes() {
        if b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(https: bool, authority: &str, path: &str) -> Target {
        Target { https, authority: authority.into(), path_with_query: path.into() }
    }

    #[test]
    fn splits_scheme_authority_and_path() {
        assert_eq!(parse("https://example.com"), Ok(target(true, "example.com", "/")));
        assert_eq!(parse("http://example.com/"), Ok(target(false, "example.com", "/")));
        assert_eq!(
            parse("https://api.example.com:8443/v1/items?id=7&x=y"),
            Ok(target(true, "api.example.com:8443", "/v1/items?id=7&x=y"))
        );
        assert_eq!(parse("http://example.com?q=1"), Ok(target(false, "example.com", "/?q=1")));
    }

    #[test]
    fn normalises_case_whitespace_and_fragments() {
        assert_eq!(
            parse("  HTTPS://Example.COM/Path#section  "),
            Ok(target(true, "example.com", "/Path"))
        );
        assert_eq!(parse("http://example.com#top"), Ok(target(false, "example.com", "/")));
        assert_eq!(parse("http://example.com:080/"), Ok(target(false, "example.com:80", "/")));
    }

    #[test]
    fn accepts_ip_addresses() {
        assert_eq!(parse("http://127.0.0.1:3000/x"), Ok(target(false, "127.0.0.1:3000", "/x")));
        assert_eq!(parse("http://[::1]:8080/"), Ok(target(false, "[::1]:8080", "/")));
        assert_eq!(parse("http://[FE80::1]"), Ok(target(false, "[fe80::1]", "/")));
    }

    #[test]
    fn percent_encodes_what_cannot_be_sent_raw() {
        assert_eq!(
            parse("https://example.com/search?q=hello world&l=日本").unwrap().path_with_query,
            "/search?q=hello%20world&l=%E6%97%A5%E6%9C%AC"
        );
        assert_eq!(parse("http://e.com/a%20b{c}").unwrap().path_with_query, "/a%20b%7Bc%7D");
    }

    #[test]
    fn requires_http_or_https() {
        assert!(parse("example.com").unwrap_err().contains("must start with http://"));
        assert!(parse("/relative/path").unwrap_err().contains("not an absolute URL"));
        assert!(parse("ftp://example.com/").unwrap_err().contains("not 'ftp'"));
        assert!(parse("file:///etc/passwd").unwrap_err().contains("not 'file'"));
    }

    #[test]
    fn rejects_bad_authorities() {
        let cases = [
            ("http://", "no host"),
            ("http:///path", "no host"),
            ("http://:80/", "no host"),
            ("https://user:pw@example.com/", "user@host"),
            ("https://@example.com/", "user@host"),
            ("http://exa mple.com/", "' ' is not allowed"),
            ("http://bücher.de/", "punycode"),
            ("http://example.com:/", "not a port number"),
            ("http://example.com:0/", "not a port number"),
            ("http://example.com:65536/", "not a port number"),
            ("http://example.com:+80/", "not a port number"),
            ("http://example.com:http/", "not a port number"),
            ("http://[::1/", "closing ']'"),
            ("http://[]/", "not an IPv6 address"),
            ("http://[::1]x/", "expected ':port'"),
            ("http://a\nb/", "control characters"),
        ];
        for (url, expected) in cases {
            let err = parse(url).unwrap_err();
            assert!(err.contains(expected), "{url:?}: {err}");
        }
    }
}
