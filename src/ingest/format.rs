//! What differs between repository formats when packages come in: which files a format
//! takes, how an upload is checked, stored and placed in its cell, and what a bulk
//! import does between storing packages and writing cells. The HTTP upload handler and
//! `caprepo import` are written once over [`IngestFormat`].

use std::path::Path;

use crate::agent::Signer;
use crate::caps::Scope;
use crate::formats::deb::Limits;
use crate::repo::format::{Apt, RepoFormat, Rpm};
use crate::repo::model::{AptPackage, Record, RpmPackage};
use crate::store::{RefName, Store, StoreError};
use crate::util::digest::Digest;

use super::{IngestError, Ingested, Spooled};

/// What storing an upload needs besides the upload: the store, the signing agent (RPM
/// repositories that sign packages) and the bounds on what a package may claim.
pub struct IngestContext<'a> {
    pub store: &'a Store,
    pub signer: &'a dyn Signer,
    pub limits: &'a Limits,
}

/// A repository format as ingest sees it.
pub trait IngestFormat: RepoFormat {
    /// The record a binary package becomes in its cell.
    type Package: Record;
    /// What inspecting a package file finds, before anything is stored.
    type Info: Send;
    /// The extension of the package files `caprepo import` collects (`deb`, `rpm`).
    const PACKAGE_EXTENSION: &'static str;

    /// The repository a bulk import's scope names, if the scope is one import can fill
    /// (`apt/NAME/dists/SUITE/COMPONENT`, `rpm/NAME/RELEASE`).
    fn import_target(
        store: &Store,
        scope: &Scope,
    ) -> impl Future<Output = Result<Self::Definition, IngestError>> + Send;

    /// Whether storing a package needs the agent (an RPM repository that signs packages).
    fn signs_packages(definition: &Self::Definition) -> bool;

    /// Parses and checks a package file the way the reference tools do. Blocking.
    fn inspect(spooled: &Spooled, limits: &Limits) -> Result<Self::Info, IngestError>;

    /// Stores an inspected package for `target` and returns the cell it belongs in and
    /// its record, for a bulk import to write many to each cell at once.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        context: &IngestContext<'_>,
        definition: &Self::Definition,
        info: Self::Info,
        spooled: &Spooled,
        target: &Scope,
        scratch: &Path,
        actor: &str,
    ) -> impl Future<Output = Result<(RefName, Self::Package, Ingested), IngestError>>;

    /// Claims, across the repository, what a batch of prepared packages needs before
    /// their cells are written; `Err(existing)` refuses one, naming the bytes that hold
    /// its claim. Nothing by default.
    fn claim_batch(
        store: &Store,
        repo: &str,
        packages: &mut [Self::Package],
        actor: &str,
    ) -> impl Future<Output = Result<Vec<Result<(), Digest>>, StoreError>> {
        let _ = (store, repo, actor);
        std::future::ready(Ok(packages.iter().map(|_| Ok(())).collect()))
    }

    /// Takes one uploaded file named `file_name` into `target` (within `granted`).
    fn ingest_upload(
        context: &IngestContext<'_>,
        file_name: &str,
        spooled: &Spooled,
        target: &Scope,
        granted: &Scope,
        actor: &str,
    ) -> impl Future<Output = Result<Ingested, IngestError>> + Send;
}

impl IngestFormat for Apt {
    type Package = AptPackage;
    type Info = crate::formats::deb::DebInfo;
    const PACKAGE_EXTENSION: &'static str = "deb";

    async fn import_target(store: &Store, scope: &Scope) -> Result<Self::Definition, IngestError> {
        let (Some(_), Some(_), None) = scope.apt_parts() else {
            return Err(import_scope_error(scope));
        };
        super::target_repo(store, scope).await
    }

    fn signs_packages(_: &Self::Definition) -> bool {
        false
    }

    fn inspect(spooled: &Spooled, limits: &Limits) -> Result<Self::Info, IngestError> {
        Ok(crate::formats::deb::inspect_deb(spooled.source(), limits)?)
    }

    async fn prepare(
        context: &IngestContext<'_>,
        definition: &Self::Definition,
        info: Self::Info,
        spooled: &Spooled,
        target: &Scope,
        _scratch: &Path,
        actor: &str,
    ) -> Result<(RefName, AptPackage, Ingested), IngestError> {
        super::prepare(context.store, definition, info, spooled, target, actor).await
    }

    async fn claim_batch(
        store: &Store,
        repo: &str,
        packages: &mut [AptPackage],
        actor: &str,
    ) -> Result<Vec<Result<(), Digest>>, StoreError> {
        super::claim_pool_paths(store, repo, packages, actor).await
    }

    async fn ingest_upload(
        context: &IngestContext<'_>,
        file_name: &str,
        spooled: &Spooled,
        target: &Scope,
        granted: &Scope,
        actor: &str,
    ) -> Result<Ingested, IngestError> {
        let store = context.store;
        if file_name.ends_with(".dsc") {
            super::dsc::ingest_dsc(store, spooled, target, granted, actor).await
        } else if file_name.ends_with(".changes") {
            super::dsc::ingest_changes(store, context.limits, spooled, target, granted, actor).await
        } else if crate::formats::deb::paths::is_source_file(file_name) {
            super::dsc::stage(store, spooled, file_name, target, granted, actor).await
        } else {
            super::ingest(store, context.limits, spooled, target, granted, actor).await
        }
    }
}

impl IngestFormat for Rpm {
    type Package = RpmPackage;
    type Info = crate::formats::rpm::RpmInfo;
    const PACKAGE_EXTENSION: &'static str = "rpm";

    async fn import_target(store: &Store, scope: &Scope) -> Result<Self::Definition, IngestError> {
        if scope.segments().len() != 3 {
            return Err(import_scope_error(scope));
        }
        super::rpm::target_repo(store, scope).await
    }

    fn signs_packages(definition: &Self::Definition) -> bool {
        definition.sign_packages
    }

    fn inspect(spooled: &Spooled, _: &Limits) -> Result<Self::Info, IngestError> {
        Ok(crate::formats::rpm::inspect_rpm(spooled.source())?)
    }

    async fn prepare(
        context: &IngestContext<'_>,
        definition: &Self::Definition,
        info: Self::Info,
        spooled: &Spooled,
        target: &Scope,
        scratch: &Path,
        actor: &str,
    ) -> Result<(RefName, RpmPackage, Ingested), IngestError> {
        super::rpm::prepare(
            context.store,
            context.signer,
            definition,
            info,
            spooled,
            target,
            scratch,
            actor,
        )
        .await
    }

    async fn ingest_upload(
        context: &IngestContext<'_>,
        _file_name: &str,
        spooled: &Spooled,
        target: &Scope,
        granted: &Scope,
        actor: &str,
    ) -> Result<Ingested, IngestError> {
        super::rpm::ingest(
            context.store,
            context.signer,
            spooled,
            target,
            granted,
            actor,
        )
        .await
    }
}

fn import_scope_error(scope: &Scope) -> IngestError {
    IngestError::BadTarget(format!(
        "import into one component or release: apt/NAME/dists/SUITE/COMPONENT or rpm/NAME/RELEASE \
         (got {scope})"
    ))
}
