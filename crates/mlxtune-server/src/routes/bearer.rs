//! Where a request's API key comes from: `Authorization: Bearer <key>`, or — for WebSocket
//! upgrades from browsers, which cannot set headers — a `Sec-WebSocket-Protocol` entry
//! `mlxtune.bearer.<key>` offered beside the plain `mlxtune` subprotocol, which the stream
//! routes select and echo. The key never travels in the URL, where it would reach logs.

use axum::http::{header, HeaderMap};

/// The subprotocol the stream routes select; the key rides beside it.
pub const SUBPROTOCOL: &str = "mlxtune";

/// The prefix of the subprotocol entry that carries the key.
pub const KEY_PREFIX: &str = "mlxtune.bearer.";

/// The presented key, if any: the `Authorization` header first, then the subprotocols.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        return v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(KEY_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_authorization_header_wins_over_a_subprotocol() {
        let h = headers(&[
            (header::AUTHORIZATION, "Bearer abc"),
            (
                header::SEC_WEBSOCKET_PROTOCOL,
                "mlxtune, mlxtune.bearer.xyz",
            ),
        ]);
        assert_eq!(presented_key(&h), Some("abc"));
    }

    #[test]
    fn a_key_is_read_from_any_offered_subprotocol() {
        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "mlxtune,mlxtune.bearer.k-1")]);
        assert_eq!(presented_key(&h), Some("k-1"));
        let h = headers(&[
            (header::SEC_WEBSOCKET_PROTOCOL, "mlxtune"),
            (header::SEC_WEBSOCKET_PROTOCOL, "mlxtune.bearer.k-2"),
        ]);
        assert_eq!(presented_key(&h), Some("k-2"));
    }

    #[test]
    fn no_header_and_other_subprotocols_present_no_key() {
        assert_eq!(presented_key(&HeaderMap::new()), None);
        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "mlxtune, chat")]);
        assert_eq!(presented_key(&h), None);
        let h = headers(&[(header::AUTHORIZATION, "Basic abc")]);
        assert_eq!(presented_key(&h), None);
    }
}
