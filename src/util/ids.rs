//! Random names: cap ids, writer leases, gc runs, spool files. 128 bits from the OS,
//! hex-encoded, so two never meet.

/// A fresh random id, 32 hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}
