//! The capability token: `caprepo1.` followed by a chain of signed blocks and a
//! proof key, all base64url so the token fits in a URL.
//!
//! Block 0 is signed by the data dir's ed25519 root key. Every block names the
//! public key of the next link (`next`), and the token carries that key's secret
//! (the proof). To attenuate, a holder appends a block that only narrows the
//! previous one, signs it with the proof, and replaces the proof with a fresh
//! key. The verifier checks each signature against the previous block's `next`,
//! refuses any block that widens, and intersects them all.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::scope::Scope;

pub const PREFIX: &str = "caprepo1.";
const MAX_TOKEN_LEN: usize = 8192;
const MAX_BLOCKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    Upload,
    Read,
    Publish,
    Admin,
}

impl std::str::FromStr for Right {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "upload" => Ok(Right::Upload),
            "read" => Ok(Right::Read),
            "publish" => Ok(Right::Publish),
            "admin" => Ok(Right::Admin),
            other => Err(format!(
                "unknown right {other:?}; rights are upload, read, publish, admin"
            )),
        }
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Right::Upload => "upload",
            Right::Read => "read",
            Right::Publish => "publish",
            Right::Admin => "admin",
        })
    }
}

/// One link of the chain; `schema/cap-block.schema.json` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub v: u8,
    /// 32 hex characters, random. Only block 0's is the cap's id as written: the root key
    /// signed it. A later block is written by a holder, who could copy any id into it,
    /// so its id is derived instead ([`block_id`]); this field only makes each payload
    /// unique.
    pub id: String,
    pub rights: Vec<Right>,
    pub scope: String,
    /// Not before / expires, Unix seconds.
    pub nbf: i64,
    pub exp: i64,
    /// Hex ed25519 public key that must sign the next block (and matches the proof).
    pub next: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CapError {
    #[error("no capability given: send `Authorization: Bearer caprepo1....`")]
    Missing,
    #[error("malformed capability: {0}")]
    Malformed(String),
    #[error(
        "capability block {0} has a bad signature (forged, altered, or issued by another server's root key)"
    )]
    BadSignature(usize),
    #[error("capability block {block} tries to widen its parent: {why}")]
    Widening { block: usize, why: String },
    #[error("capability proof key does not match the last block (token altered)")]
    BadProof,
    #[error("capability {id} expired at {at}")]
    Expired { id: String, at: String },
    #[error("capability {id} is not valid before {at}")]
    NotYetValid { id: String, at: String },
    #[error("capability {0} has been revoked")]
    Revoked(String),
}

/// What a token claims before verification.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: String,
    pub chain_ids: Vec<String>,
    pub scope: String,
    pub rights: Vec<Right>,
    pub nbf: i64,
    pub exp: i64,
}

/// What a verified token grants: the intersection of all its blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The id of the first block: the cap as issued.
    pub id: String,
    /// Ids of every block, root first (for revocation and for logs).
    pub chain_ids: Vec<String>,
    /// The ids the blocks were written with. Only block 0's is the cap's id; the others
    /// count for one thing: a revocation made by such an id before ids were derived still
    /// revokes this cap (a holder who copies someone's id into its block can only make its
    /// own cap revocable by it).
    pub written_ids: Vec<String>,
    pub rights: Vec<Right>,
    pub scope: Scope,
    pub nbf: i64,
    pub exp: i64,
}

impl Grant {
    /// The id to show in logs and history: the last block names this exact cap.
    pub fn log_id(&self) -> &str {
        self.chain_ids
            .last()
            .map(String::as_str)
            .unwrap_or(&self.id)
    }

    pub fn has(&self, right: Right) -> bool {
        self.rights.contains(&right)
    }
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The id of block `index > 0`: a hash of its parent's id and its own signed payload.
///
/// Revocation, history and audit name blocks by id, so a holder must not be able to pick
/// one: an admin of `apt/foo` who wrote the id of an `apt/foobar` cap into a block of its
/// own would otherwise revoke that cap, or sign uploads with its id. A derived id is unique
/// to the chain that leads to it, whatever the block says.
pub fn block_id(parent_id: &str, payload: &[u8]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"caprepo1 block id\0");
    hasher.update(parent_id.as_bytes());
    hasher.update(b"\0");
    hasher.update(payload);
    hex::encode(&hasher.finalize()[..16])
}

/// Every block's id, root first: block 0's as the root key signed it, the rest derived.
fn chain_ids(links: &[(Vec<u8>, Block, Signature)]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(links.len());
    for (index, (payload, block, _)) in links.iter().enumerate() {
        let id = match ids.last() {
            Some(parent) if index > 0 => block_id(parent, payload),
            _ => block.id.clone(),
        };
        ids.push(id);
    }
    ids
}

fn encode_link(block: &Block, signer: &SigningKey) -> String {
    // serde_json of a struct is deterministic, and we sign the exact bytes we embed.
    let payload = serde_json::to_vec(block).unwrap_or_default();
    let signature = signer.sign(&payload);
    format!(
        "{}.{}",
        B64.encode(&payload),
        B64.encode(signature.to_bytes())
    )
}

/// A fresh block and the secret key its `next` names (the new proof).
fn new_block(rights: Vec<Right>, scope: &Scope, nbf: i64, exp: i64) -> (Block, SigningKey) {
    let proof = SigningKey::generate(&mut rand_core::OsRng);
    let block = Block {
        v: 1,
        id: crate::util::ids::random_id(),
        rights,
        scope: scope.to_string(),
        nbf,
        exp,
        next: hex::encode(proof.verifying_key().to_bytes()),
    };
    (block, proof)
}

/// Issue a new cap signed by the root key.
pub fn issue(root: &SigningKey, rights: Vec<Right>, scope: &Scope, nbf: i64, exp: i64) -> String {
    let (block, proof) = new_block(rights, scope, nbf, exp);
    format!(
        "{PREFIX}{}.{}",
        encode_link(&block, root),
        B64.encode(proof.to_bytes())
    )
}

/// Parsed but not yet verified token.
pub struct Token {
    links: Vec<(Vec<u8>, Block, Signature)>,
    proof: SigningKey,
}

impl Token {
    pub fn parse(text: &str) -> Result<Token, CapError> {
        let malformed = |why: &str| CapError::Malformed(why.to_string());
        if text.len() > MAX_TOKEN_LEN {
            return Err(malformed("longer than 8192 bytes"));
        }
        let body = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| malformed("a capability starts with \"caprepo1.\""))?;
        let parts: Vec<&str> = body.split('.').collect();
        if parts.len() < 3 || parts.len() % 2 == 0 {
            return Err(malformed("wrong number of parts (truncated?)"));
        }
        if (parts.len() - 1) / 2 > MAX_BLOCKS {
            return Err(malformed("too many blocks"));
        }
        let decode = |part: &str| {
            B64.decode(part)
                .map_err(|_| malformed("a part is not base64url"))
        };
        let mut links = Vec::new();
        for pair in parts[..parts.len() - 1].chunks(2) {
            let payload = decode(pair[0])?;
            let block: Block = serde_json::from_slice(&payload)
                .map_err(|e| CapError::Malformed(format!("block: {e}")))?;
            if block.v != 1 {
                return Err(malformed("unknown block version"));
            }
            if !is_lower_hex(&block.id, 32) || !is_lower_hex(&block.next, 64) {
                return Err(malformed(
                    "a block's id or next key is not lowercase hex of the right length",
                ));
            }
            let sig_bytes: [u8; 64] = decode(pair[1])?
                .try_into()
                .map_err(|_| malformed("a signature is not 64 bytes"))?;
            links.push((payload, block, Signature::from_bytes(&sig_bytes)));
        }
        let proof_bytes: [u8; 32] = decode(parts[parts.len() - 1])?
            .try_into()
            .map_err(|_| malformed("the proof key is not 32 bytes"))?;
        Ok(Token {
            links,
            proof: SigningKey::from_bytes(&proof_bytes),
        })
    }

    /// Check signatures, narrowing and the proof; then time. Revocation is the caller's.
    pub fn verify(&self, root: &VerifyingKey, now: i64) -> Result<Grant, CapError> {
        let grant = self.verify_chain(root)?;
        if now >= grant.exp {
            return Err(CapError::Expired {
                id: grant.id.clone(),
                at: crate::util::time::rfc3339(grant.exp),
            });
        }
        if now < grant.nbf {
            return Err(CapError::NotYetValid {
                id: grant.id.clone(),
                at: crate::util::time::rfc3339(grant.nbf),
            });
        }
        Ok(grant)
    }

    /// Signatures, narrowing and proof, but not the time window: for naming a cap
    /// (to revoke it) rather than using it.
    pub fn verify_chain(&self, root: &VerifyingKey) -> Result<Grant, CapError> {
        let mut signer_key = *root;
        let mut grant: Option<Grant> = None;
        let ids = chain_ids(&self.links);
        for (index, ((payload, block, signature), id)) in self.links.iter().zip(&ids).enumerate() {
            signer_key
                .verify_strict(payload, signature)
                .map_err(|_| CapError::BadSignature(index))?;
            let scope: Scope = block
                .scope
                .parse()
                .map_err(|e: super::scope::ScopeError| CapError::Malformed(e.to_string()))?;
            if block.nbf > block.exp {
                return Err(CapError::Malformed(format!(
                    "block {index} expires before it starts"
                )));
            }
            grant = Some(match grant {
                None => Grant {
                    id: id.clone(),
                    chain_ids: vec![id.clone()],
                    written_ids: Vec::new(),
                    rights: block.rights.clone(),
                    scope,
                    nbf: block.nbf,
                    exp: block.exp,
                },
                Some(parent) => narrow(parent, block, id, scope, index)?,
            });
            let next: [u8; 32] = hex::decode(&block.next)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| CapError::Malformed(format!("block {index} has a bad next key")))?;
            signer_key = VerifyingKey::from_bytes(&next)
                .map_err(|_| CapError::Malformed("bad next key".into()))?;
        }
        let mut grant = grant.ok_or_else(|| CapError::Malformed("no blocks".into()))?;
        grant.written_ids = self.links.iter().map(|(_, b, _)| b.id.clone()).collect();
        let proof_public = self.proof.verifying_key().to_bytes();
        if !bool::from(proof_public.ct_eq(&signer_key.to_bytes())) {
            return Err(CapError::BadProof);
        }
        Ok(grant)
    }

    /// What the token claims, without checking it (for `cap inspect`): the last
    /// block's scope and rights, the latest not-before and the earliest expiry.
    pub fn summary(&self) -> Summary {
        let blocks: Vec<&Block> = self.links.iter().map(|(_, b, _)| b).collect();
        let last = blocks[blocks.len() - 1];
        Summary {
            id: blocks[0].id.clone(),
            chain_ids: chain_ids(&self.links),
            scope: last.scope.clone(),
            rights: last.rights.clone(),
            nbf: blocks.iter().map(|b| b.nbf).max().unwrap_or(0),
            exp: blocks.iter().map(|b| b.exp).min().unwrap_or(0),
        }
    }

    /// Append a block that narrows this token; the result is a new token string.
    pub fn attenuate(&self, rights: Vec<Right>, scope: &Scope, nbf: i64, exp: i64) -> String {
        let (block, proof) = new_block(rights, scope, nbf, exp);
        let mut out = String::from(PREFIX);
        for (payload, _, signature) in &self.links {
            out.push_str(&B64.encode(payload));
            out.push('.');
            out.push_str(&B64.encode(signature.to_bytes()));
            out.push('.');
        }
        out.push_str(&encode_link(&block, &self.proof));
        out.push('.');
        out.push_str(&B64.encode(proof.to_bytes()));
        out
    }
}

fn narrow(
    parent: Grant,
    block: &Block,
    id: &str,
    scope: Scope,
    index: usize,
) -> Result<Grant, CapError> {
    let widen = |why: String| CapError::Widening { block: index, why };
    if !parent.scope.covers(&scope) {
        return Err(widen(format!(
            "scope {scope} is not inside {}",
            parent.scope
        )));
    }
    if let Some(extra) = block.rights.iter().find(|r| !parent.rights.contains(r)) {
        return Err(widen(format!("right {extra} is not held by the parent")));
    }
    if block.exp > parent.exp {
        return Err(widen("expiry later than the parent's".into()));
    }
    if block.nbf < parent.nbf {
        return Err(widen("not-before earlier than the parent's".into()));
    }
    let mut chain_ids = parent.chain_ids;
    chain_ids.push(id.to_string());
    Ok(Grant {
        id: parent.id,
        chain_ids,
        written_ids: parent.written_ids,
        rights: block.rights.clone(),
        scope,
        nbf: block.nbf,
        exp: block.exp,
    })
}

/// A token shortened for logs: the prefix and its first block's id, never the secret parts.
pub fn redact(token: &str) -> String {
    match Token::parse(token) {
        Ok(t) => format!(
            "cap:{}",
            chain_ids(&t.links)
                .last()
                .map(String::as_str)
                .unwrap_or("?")
        ),
        Err(_) => "cap:<malformed>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn cell() -> Scope {
        "apt/demo/dists/stable/main/binary-amd64".parse().unwrap()
    }

    #[test]
    fn issue_and_verify() {
        let token = issue(&root(), vec![Right::Upload], &cell(), 100, 200);
        let grant = Token::parse(&token)
            .unwrap()
            .verify(&root().verifying_key(), 150)
            .unwrap();
        assert_eq!(grant.scope, cell());
        assert_eq!(grant.rights, vec![Right::Upload]);
        assert!(matches!(
            Token::parse(&token)
                .unwrap()
                .verify(&root().verifying_key(), 200),
            Err(CapError::Expired { .. })
        ));
        assert!(matches!(
            Token::parse(&token)
                .unwrap()
                .verify(&root().verifying_key(), 99),
            Err(CapError::NotYetValid { .. })
        ));
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "URL-safe"
        );
    }

    #[test]
    fn another_root_forgery_and_truncation_fail() {
        let token = issue(&root(), vec![Right::Upload], &cell(), 0, i64::MAX);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            Token::parse(&token)
                .unwrap()
                .verify(&other.verifying_key(), 1),
            Err(CapError::BadSignature(0))
        );
        assert!(
            Token::parse(&token[..token.len() - 10]).is_err()
                || Token::parse(&token[..token.len() - 10])
                    .unwrap()
                    .verify(&root().verifying_key(), 1)
                    .is_err()
        );
        // Swap in a wider payload but keep the old signature.
        let parts: Vec<&str> = token.strip_prefix(PREFIX).unwrap().split('.').collect();
        let mut block: Block = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        block.scope = "apt/demo".into();
        let forged = format!(
            "{PREFIX}{}.{}.{}",
            B64.encode(serde_json::to_vec(&block).unwrap()),
            parts[1],
            parts[2]
        );
        assert_eq!(
            Token::parse(&forged)
                .unwrap()
                .verify(&root().verifying_key(), 1),
            Err(CapError::BadSignature(0))
        );
    }

    #[test]
    fn attenuation_narrows_and_widening_is_refused() {
        let wide: Scope = "apt/demo".parse().unwrap();
        let token = issue(&root(), vec![Right::Upload, Right::Read], &wide, 0, 1000);
        let narrow = Token::parse(&token)
            .unwrap()
            .attenuate(vec![Right::Upload], &cell(), 0, 500);
        let grant = Token::parse(&narrow)
            .unwrap()
            .verify(&root().verifying_key(), 1)
            .unwrap();
        assert_eq!(
            (grant.scope.clone(), grant.rights.clone(), grant.exp),
            (cell(), vec![Right::Upload], 500)
        );
        assert_eq!(grant.chain_ids.len(), 2);
        let back_out = Token::parse(&narrow)
            .unwrap()
            .attenuate(vec![Right::Upload], &wide, 0, 500);
        assert!(matches!(
            Token::parse(&back_out)
                .unwrap()
                .verify(&root().verifying_key(), 1),
            Err(CapError::Widening { .. })
        ));
        let more_rights =
            Token::parse(&narrow)
                .unwrap()
                .attenuate(vec![Right::Admin], &cell(), 0, 500);
        assert!(matches!(
            Token::parse(&more_rights)
                .unwrap()
                .verify(&root().verifying_key(), 1),
            Err(CapError::Widening { .. })
        ));
        let later = Token::parse(&narrow)
            .unwrap()
            .attenuate(vec![Right::Upload], &cell(), 0, 5000);
        assert!(matches!(
            Token::parse(&later)
                .unwrap()
                .verify(&root().verifying_key(), 1),
            Err(CapError::Widening { .. })
        ));
    }

    #[test]
    fn redaction_never_shows_secret_parts() {
        let token = issue(&root(), vec![Right::Upload], &cell(), 0, 10);
        let shown = redact(&token);
        assert!(
            shown.starts_with("cap:") && shown.len() == 4 + 32,
            "{shown}"
        );
        for part in token.strip_prefix(PREFIX).unwrap().split('.') {
            assert!(
                !shown.contains(part),
                "the redacted form must not carry any part of the token"
            );
        }
    }

    /// A holder writes the id of someone else's cap into a block it appends: that id must
    /// not become the attenuated cap's, or revoking "its own" cap revokes the other one.
    #[test]
    fn a_holder_cannot_choose_a_block_id() {
        let foo: Scope = "apt/foo".parse().unwrap();
        let foobar: Scope = "apt/foobar".parse().unwrap();
        let victim = issue(&root(), vec![Right::Upload], &foobar, 0, 1000);
        let victim_id = Token::parse(&victim).unwrap().summary().id;
        let admin = issue(&root(), vec![Right::Admin], &foo, 0, 1000);
        let parsed = Token::parse(&admin).unwrap();
        // Forge the appended block by hand, with the victim's id in it.
        let (mut block, proof) = new_block(vec![Right::Admin], &foo, 0, 500);
        block.id = victim_id.clone();
        let mut forged = String::from(PREFIX);
        for (payload, _, signature) in &parsed.links {
            forged.push_str(&B64.encode(payload));
            forged.push('.');
            forged.push_str(&B64.encode(signature.to_bytes()));
            forged.push('.');
        }
        forged.push_str(&encode_link(&block, &parsed.proof));
        forged.push('.');
        forged.push_str(&B64.encode(proof.to_bytes()));
        let grant = Token::parse(&forged)
            .unwrap()
            .verify(&root().verifying_key(), 1)
            .unwrap();
        assert!(
            !grant.chain_ids.contains(&victim_id),
            "{:?}",
            grant.chain_ids
        );
        assert_ne!(grant.log_id(), victim_id);
        // The written id is kept only so that revoking it revokes this (the forger's) cap.
        assert!(grant.written_ids.contains(&victim_id));
        assert!(!redact(&forged).contains(&victim_id));
        assert!(
            !Token::parse(&forged)
                .unwrap()
                .summary()
                .chain_ids
                .contains(&victim_id)
        );
        // The derived id is stable: the same token always names the same block.
        let again = Token::parse(&forged)
            .unwrap()
            .verify(&root().verifying_key(), 1)
            .unwrap();
        assert_eq!(grant.chain_ids, again.chain_ids);
    }
}
