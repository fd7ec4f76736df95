//! Publishing, the part shared by APT suites ([`apt::publish`]) and RPM trees
//! ([`rpm::publish`]): a publish joins each index file from per-chunk
//! fragments ([`fragment_cache`]) laid out over the last layout ([`layout`]), hashes
//! the joins by resuming earlier states (`store::resumable_hash`), compresses them
//! ([`compress`]), checks what it renders ([`publish_check`]), and flips one
//! publication ref ([`publication`]). [`PublishFormat`] is how each format publishes a
//! tree, and [`publish_if_changed`] publishes whichever a tree name says.

pub mod apt;
pub mod compress;
pub mod fragment_cache;
pub mod layout;
pub mod publication;
pub mod publish_check;
pub mod rpm;

use crate::agent::Signer;
use crate::formats::Format;
use crate::repo::format::{Apt, RepoFormat, Rpm, with_format};
use crate::store::Store;
use publication::{PublishError, Published};

/// A repository format as publishing sees it: how one of its trees becomes a signed
/// publication.
pub trait PublishFormat: RepoFormat {
    /// Publishes `tree` if its inputs moved since its last publication.
    fn publish(
        store: &Store,
        signer: &dyn Signer,
        repo: &str,
        tree: &str,
    ) -> impl Future<Output = Result<Published, PublishError>> + Send;
}

impl PublishFormat for Apt {
    fn publish(
        store: &Store,
        signer: &dyn Signer,
        repo: &str,
        tree: &str,
    ) -> impl Future<Output = Result<Published, PublishError>> + Send {
        apt::publish::publish_suite(store, signer, repo, tree)
    }
}

impl PublishFormat for Rpm {
    fn publish(
        store: &Store,
        signer: &dyn Signer,
        repo: &str,
        tree: &str,
    ) -> impl Future<Output = Result<Published, PublishError>> + Send {
        rpm::publish::publish_tree(store, signer, repo, tree)
    }
}

/// Publishes one APT suite or RPM tree, whichever `tree` names, if its inputs moved.
pub async fn publish_if_changed(
    store: &Store,
    signer: &dyn Signer,
    repo: &str,
    tree: &str,
) -> Result<Published, PublishError> {
    with_format!(Format::of_tree(tree), F => F::publish(store, signer, repo, tree).await)
}
