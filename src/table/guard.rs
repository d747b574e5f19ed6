//! A guard: the writer's permissions, checked against the record before and after a write as
//! the write is decided, so that no other write can come between the check and the commit.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::Result;
use crate::storage::Key;

/// The check: given the record's key, the current record (`None` if there is none) and the
/// record about to be stored (`None` for a delete, with its primary key filled in), it refuses
/// the write with an error, or lets it through, possibly after changing what is stored.
pub type Check = dyn Fn(&Key, Option<&Value>, Option<&mut Value>) -> Result<()> + Send + Sync;

/// A shared [`Check`].
#[derive(Clone)]
pub struct Guard(pub Arc<Check>);

impl Guard {
    pub(super) fn check(
        &self,
        key: &Key,
        before: Option<&Value>,
        after: Option<&mut Value>,
    ) -> Result<()> {
        (self.0)(key, before, after)
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Guard")
    }
}

impl PartialEq for Guard {
    fn eq(&self, other: &Guard) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Guard {}
