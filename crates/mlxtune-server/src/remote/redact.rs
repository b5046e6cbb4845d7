//! URIs as they may be shown: credentials (`user:password@`) and query strings (signatures,
//! tokens) replaced by `***`, so neither reaches an error message or a log line.

use std::borrow::Cow;

/// `uri` with its userinfo and query string replaced by `***`.
pub fn redacted(uri: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Cow::Borrowed(uri);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map(|(_, host)| host);
    let query = tail.find('?');
    if host.is_none() && query.is_none() {
        return Cow::Borrowed(uri);
    }
    let mut out = format!("{scheme}://");
    if let Some(host) = host {
        out.push_str("***@");
        out.push_str(host);
    } else {
        out.push_str(authority);
    }
    match query {
        Some(q) => {
            out.push_str(&tail[..q]);
            out.push_str("?***");
        }
        None => out.push_str(tail),
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn credentials_and_queries_are_hidden_and_plain_uris_kept() {
        assert_eq!(
            redacted("https://user:pw@host:8/a/b.jsonl?sig=s3cret"),
            "https://***@host:8/a/b.jsonl?***"
        );
        assert_eq!(redacted("http://h/p@q.jsonl"), "http://h/p@q.jsonl");
        assert_eq!(redacted("s3://bucket/key.jsonl"), "s3://bucket/key.jsonl");
        assert_eq!(redacted("ftp://a@b"), "ftp://***@b");
        assert_eq!(redacted("local://x.jsonl"), "local://x.jsonl");
    }
}
