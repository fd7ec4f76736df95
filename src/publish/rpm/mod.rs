//! Publishing RPM trees: `<release>/<arch>` of a repository becomes `repodata/` with
//! primary, filelists and other XML (and their .gz), a repomd.xml that names them by
//! sha256, and its signature `repomd.xml.asc`. Each package's entries were rendered at
//! upload ([`crate::formats::rpm::xml`]); publishing joins them per chunk
//! ([`fragments`]), hashes the joins ahead of the next upload ([`hash_ahead`], with
//! the open text's states in [`open_text`]) and signs the result ([`publish`]).

pub mod fragments;
pub mod hash_ahead;
pub mod open_text;
pub mod publish;
