//! The repository model: what a repository, a cell, a chunk of packages and a
//! publication are as stored manifests ([`model`]); repository definitions and
//! retention ([`definitions`]); the cells build workers write into ([`cells`]); and
//! the claims that keep one file name or source package to one upload across cells
//! ([`claims`]); and what differs between APT and RPM repositories ([`format`]).

pub mod cells;
pub mod claims;
pub mod definitions;
pub mod format;
pub mod model;
