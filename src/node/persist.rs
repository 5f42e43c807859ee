//! What a node with a data dir does beyond its record store (`crate::storage`): saves its
//! contacts when they changed (checked after joining and every maintenance tick) and on
//! shutdown, and rejoins through them when
//! it restarts, so that a node whose `P2P_REMOTE_HOST` does not answer (or is empty: the node
//! that created the network) finds its network again.

use tracing::{debug, warn};

use super::driver::Driver;
use crate::kad::Contact;

/// Saved contacts pinged when a node rejoins (the closest to it first).
pub(crate) const SAVED_CONTACTS_PINGED: usize = 5 * crate::kad::K;

impl Driver {
    /// Saves the routing table's contacts (live and stale) if they changed since the last
    /// save (if the node has a data dir and knows any: an empty table would erase the saved
    /// ones for nothing).
    pub(crate) fn save_contacts(&mut self) {
        let Some(dir) = &self.cfg.data_dir else {
            return;
        };
        let routing = self.core.routing();
        let mut contacts: Vec<Contact> = routing.live().chain(routing.stale()).cloned().collect();
        contacts.sort_by_key(|c| c.id);
        if contacts.is_empty() || contacts == self.contacts_saved {
            return;
        }
        match dir.save_contacts(&contacts) {
            Ok(()) => {
                debug!(count = contacts.len(), "saved contacts");
                self.contacts_saved = contacts;
            }
            Err(e) => warn!(error = %e, path = %dir.path().display(), "cannot save contacts"),
        }
    }

    /// Addresses of the saved contacts to ping when (re)joining, closest to this node first.
    pub(crate) fn saved_contact_addrs(&self) -> Vec<String> {
        let me = self.core.id();
        let mut saved: Vec<&Contact> = self.saved_contacts.iter().filter(|c| c.id != me).collect();
        saved.sort_by_key(|c| c.id.distance(&me));
        saved
            .into_iter()
            .take(SAVED_CONTACTS_PINGED)
            .map(|c| c.addr.to_string())
            .collect()
    }
}
