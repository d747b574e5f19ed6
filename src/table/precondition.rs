//! Conditional requests: `If-Match` / `If-None-Match` as version sets (RFC 9110 section 13).

/// One `If-Match` or `If-None-Match` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tags {
    /// `*`: any current record.
    Any,
    /// A list of entity tags, as the versions they name. Tags that name no version of ours are
    /// dropped: they can never match.
    Versions(Vec<u64>),
}

use super::guard::Guard;

/// The preconditions a request carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// `If-Match`: the write proceeds only if the current version is one of these.
    pub if_match: Option<Tags>,
    /// `If-None-Match`: a write proceeds (a read answers in full) only if the current version is
    /// none of these.
    pub if_none_match: Option<Tags>,
    /// The writer's permissions, checked against the record before and after the write.
    pub guard: Option<Guard>,
}

/// The outcome of evaluating a [`Precondition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Proceed,
    /// A read whose `If-None-Match` matched: answer 304.
    NotModified,
    /// The precondition failed: answer 412.
    Failed,
}

impl Tags {
    fn matches(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Tags::Any, Some(_)) => true,
            (Tags::Versions(versions), Some(version)) => versions.contains(&version),
        }
    }
}

impl Precondition {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none() && self.guard.is_none()
    }

    /// Evaluates the precondition against the current record's version (`None` if there is none), in
    /// the order RFC 9110 section 13.2.2 prescribes. `read` is true for GET and HEAD.
    pub fn evaluate(&self, current: Option<u64>, read: bool) -> Verdict {
        if let Some(tags) = &self.if_match
            && !tags.matches(current)
        {
            return Verdict::Failed;
        }
        if let Some(tags) = &self.if_none_match
            && tags.matches(current)
        {
            return if read {
                Verdict::NotModified
            } else {
                Verdict::Failed
            };
        }
        Verdict::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(v: &[u64]) -> Option<Tags> {
        Some(Tags::Versions(v.to_vec()))
    }

    #[test]
    fn table_of_cases() {
        use Verdict::*;
        let any = Some(Tags::Any);
        // (If-Match, If-None-Match, current version, is a read, verdict)
        type Case = (Option<Tags>, Option<Tags>, Option<u64>, bool, Verdict);
        let cases: [Case; 12] = [
            (None, None, None, false, Proceed),
            (None, None, Some(1), true, Proceed),
            (versions(&[1]), None, Some(1), false, Proceed),
            (versions(&[1, 2]), None, Some(2), false, Proceed),
            (versions(&[1]), None, Some(2), false, Failed),
            (versions(&[1]), None, None, false, Failed),
            (any.clone(), None, None, false, Failed),
            (any.clone(), None, Some(5), false, Proceed),
            (None, any.clone(), None, false, Proceed),
            (None, any.clone(), Some(5), false, Failed),
            (None, versions(&[5]), Some(5), true, NotModified),
            (None, versions(&[4]), Some(5), true, Proceed),
        ];
        for (if_match, if_none_match, current, read, expected) in cases {
            let precondition = Precondition {
                if_match: if_match.clone(),
                if_none_match: if_none_match.clone(),
                guard: None,
            };
            assert_eq!(
                precondition.evaluate(current, read),
                expected,
                "If-Match {if_match:?}, If-None-Match {if_none_match:?}, current {current:?}, read {read}"
            );
        }
    }
}
