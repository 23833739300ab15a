//! The shared-controls part of the store protocol: a store that several instances share keeps
//! the operator's blocks and lists as fields of one record with a version token, which every
//! instance polls and reloads when it changes. A store that shares nothing keeps none: its
//! controls live in the process.

use std::future::Future;

use crate::error::StoreError;

/// One field of the controls record and its value.
pub(crate) type ControlField = (Vec<u8>, Vec<u8>);

/// The field that holds the record's version token, changed with every write.
pub(crate) const VERSION_FIELD: &[u8] = b"v";

/// Where the operator's controls are kept for every instance sharing the store to read.
pub(crate) trait ControlStore: Send + Sync {
    /// The version token of the stored controls; `None` when the store shares none.
    fn controls_version(&self) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Every stored `(field, value)` of the controls, the version's included.
    fn read_controls(&self) -> impl Future<Output = Result<Vec<ControlField>, StoreError>> + Send;

    /// Sets one field, or removes one, and changes the version token, as one change: a caller
    /// that leaves mid-write cannot leave the change without its new token.
    fn write_controls(
        &self,
        set: Option<ControlField>,
        remove: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
