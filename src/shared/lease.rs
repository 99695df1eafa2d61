//! A slot of the shared limit held by a running call.

use std::fmt;
use std::sync::Arc;

use super::Coordinator;

/// The lease behind a [`Permit`](crate::Permit) of a shared limit: renewed
/// while held, freed in Redis (in the background) when dropped.
pub(crate) struct Lease {
    coordinator: Arc<Coordinator>,
    id: String,
}

impl Lease {
    pub(crate) fn new(coordinator: Arc<Coordinator>, id: String) -> Self {
        Self { coordinator, id }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.coordinator.release(std::mem::take(&mut self.id));
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lease").field(&self.id).finish()
    }
}
