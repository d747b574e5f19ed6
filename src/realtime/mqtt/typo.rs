//! The typo guard: a plain topic whose first level is one edit away from a table's name
//! (`Prodcut/1`, `product/1` for `Product`) is most likely a misspelt table. It is still a valid
//! plain topic and is served as one; the log says so once per first level.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use crate::catalog::Catalog;

/// First levels warned about, at most: past it the guard stays quiet rather than grow.
const MAX_WARNED: usize = 1024;

#[derive(Default)]
pub struct TypoGuard {
    warned: Mutex<HashSet<String>>,
}

impl TypoGuard {
    /// Logs a warning the first time `first_level` of a plain topic or filter, used by
    /// `client`, looks like a misspelt table name.
    pub fn check(&self, catalog: &Catalog, first_level: &str, client: &str) {
        let Some(table) = catalog
            .resources()
            .map(|r| r.table().name())
            .find(|table| one_edit_apart(table, first_level))
        else {
            return;
        };
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() < MAX_WARNED && warned.insert(first_level.to_owned()) {
            tracing::warn!(
                client,
                "MQTT topics under `{first_level}/` are plain broker topics, not table `{table}`; \
                 if table `{table}` was meant, its topics are `{table}/<id>`"
            );
        }
    }
}

/// Whether `a` and `b` differ, but only by case or by one insertion, deletion, substitution or
/// swap of two neighbouring characters.
fn one_edit_apart(a: &str, b: &str) -> bool {
    if a == b {
        return false;
    }
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Every short name is one edit from many words: only a case change counts for them.
    if short.len() < 3 || long.len() - short.len() > 1 {
        return false;
    }
    let start = short
        .iter()
        .zip(long.iter())
        .take_while(|(x, y)| x == y)
        .count();
    if short.len() == long.len() {
        let (x, y) = (&short[start..], &long[start..]);
        // One substitution, or one swap of neighbours.
        x[1..] == y[1..] || (x.len() >= 2 && x[0] == y[1] && x[1] == y[0] && x[2..] == y[2..])
    } else {
        short[start..] == long[start + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::one_edit_apart;

    #[test]
    fn one_edit_is_a_case_change_insertion_deletion_substitution_or_swap() {
        for (a, b) in [
            ("Product", "product"),
            ("Product", "Produc"),
            ("Product", "Products"),
            ("Product", "Prodcut"),
            ("Product", "Prodvct"),
            ("Product", "roduct"),
        ] {
            assert!(one_edit_apart(a, b), "{a} {b}");
            assert!(one_edit_apart(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("Product", "Product"),
            ("Product", "Prod"),
            ("Product", "sensors"),
            ("Product", "Pordcut"),
            ("Item", "Items2"),
            ("T", "a"),
        ] {
            assert!(!one_edit_apart(a, b), "{a} {b}");
        }
    }
}
