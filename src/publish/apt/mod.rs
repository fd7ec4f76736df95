//! APT repositories: the pool layout, the Packages and Release indices, and the
//! publisher that turns cells into a signed, by-hash-addressed suite.

pub mod contents;
pub mod fragments;
pub mod packages;
pub mod publish;
pub mod release;
pub mod sources;
