//! The replicated procedure table: which session, on which worker, serves a
//! procedure. Changed only by `ProcAdd` / `ProcRemove` broadcasts from each
//! procedure's owner, so a CALL is routed where it is decoded.

use super::{Realm, SessionRef};
use ahash::AHashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcRoute {
    pub registration: u64,
    pub callee: SessionRef,
    /// The callee asked to know its callers (`disclose_caller`).
    pub disclose_caller: bool,
}

#[derive(Debug, Default)]
pub struct ProcTable {
    realms: AHashMap<Realm, AHashMap<String, ProcRoute>>,
}

impl ProcTable {
    pub fn add(&mut self, realm: &Realm, procedure: &str, route: ProcRoute) {
        self.realms.entry(realm.clone()).or_default().insert(procedure.to_owned(), route);
    }

    /// Removes the route if it still is `registration` (a newer one stays).
    pub fn remove(&mut self, realm: &str, procedure: &str, registration: u64) {
        let Some(procs) = self.realms.get_mut(realm) else { return };
        if procs.get(procedure).is_some_and(|r| r.registration == registration) {
            procs.remove(procedure);
        }
        if procs.is_empty() {
            self.realms.remove(realm);
        }
    }

    pub fn get(&self, realm: &str, procedure: &str) -> Option<&ProcRoute> {
        self.realms.get(realm)?.get(procedure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_get_remove() {
        let mut t = ProcTable::default();
        let realm: Realm = "r".into();
        let callee = SessionRef { worker: 1, id: 9 };
        t.add(&realm, "p", ProcRoute { registration: 5, callee, disclose_caller: false });
        assert_eq!(t.get("r", "p").unwrap().callee, callee);
        t.remove("r", "p", 4);
        assert!(t.get("r", "p").is_some());
        t.remove("r", "p", 5);
        assert!(t.get("r", "p").is_none());
    }
}
