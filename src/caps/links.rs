//! Read links: the short form of a read cap, for URLs. apt names its cache
//! files after the URL and refuses names over 255 bytes; a self-contained signed
//! cap (an ed25519 signature alone is 86 base64 characters) plus apt's
//! `..._dists_<suite>_<component>_binary-<arch>_by-hash_SHA256_<64 hex>` does not
//! fit. So a URL carries `cr1-` and 40 hex characters: the first 160 bits of the
//! sha256 of the full cap. The full cap is kept in the store under that name and
//! verified in full (signatures, expiry, revocation) on every request, so a link
//! is exactly as strong, and as revocable, as the cap it names.

use bytes::Bytes;

use crate::store::{Result, Store};
use crate::util::digest::Digest;

pub const PREFIX: &str = "cr1-";
const HEX_LEN: usize = 40;

/// The link for a full cap.
pub fn link_of(token: &str) -> String {
    format!("{PREFIX}{}", &Digest::of(token.as_bytes()).hex()[..HEX_LEN])
}

/// True if the text has the shape of a link (it may still be unknown).
pub fn is_link(text: &str) -> bool {
    text.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn object_name(link: &str) -> String {
    format!("links/{}", &link[PREFIX.len()..])
}

/// Keep the full cap under its link. Idempotent.
pub async fn register(store: &Store, token: &str) -> Result<String> {
    let link = link_of(token);
    store
        .put_named_once(&object_name(&link), Bytes::from(token.to_string()))
        .await?;
    Ok(link)
}

/// The full cap a link names, if it was registered (and still hashes to the link).
pub async fn resolve(store: &Store, link: &str) -> Result<Option<String>> {
    if !is_link(link) {
        return Ok(None);
    }
    let Some(bytes) = store.get_named(&object_name(link), 16 * 1024).await? else {
        return Ok(None);
    };
    let token = String::from_utf8_lossy(&bytes).into_owned();
    Ok((link_of(&token) == link).then_some(token))
}

/// A link shortened for logs.
pub fn redact(link: &str) -> String {
    format!(
        "link:{}",
        link.get(PREFIX.len()..PREFIX.len() + 6).unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn links_round_trip_and_refuse_unknown_or_malformed() {
        let store = Store::memory();
        let link = register(&store, "caprepo1.a.b.c").await.unwrap();
        assert!(is_link(&link) && link.len() == 44);
        assert_eq!(
            resolve(&store, &link).await.unwrap().as_deref(),
            Some("caprepo1.a.b.c")
        );
        assert_eq!(
            register(&store, "caprepo1.a.b.c").await.unwrap(),
            link,
            "idempotent"
        );
        assert_eq!(
            resolve(&store, &link_of("caprepo1.other")).await.unwrap(),
            None
        );
        for bad in ["cr1-../../x", "cr1-ABCDEF", &link[..20], "links"] {
            assert!(resolve(&store, bad).await.unwrap().is_none(), "{bad}");
        }
        assert!(!redact(&link).contains(&link[4..20]));
    }
}
