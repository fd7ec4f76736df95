//! Publishing, the part shared by APT suites ([`apt::publish`]) and RPM trees
//! ([`rpm::publish`]): a publish joins each index file from per-chunk
//! fragments ([`fragment_memory`]) laid out over the last layout ([`layout`]), hashes
//! the joins by resuming earlier states (`store::resumable_hash`), compresses them
//! ([`compress`]), checks what it renders ([`publish_check`]), and flips one
//! publication ref ([`publication`]).

pub mod apt;
pub mod compress;
pub mod fragment_memory;
pub mod layout;
pub mod publication;
pub mod publish_check;
pub mod rpm;
