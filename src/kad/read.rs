//! A get's decisions, without I/O: how many copies to wait for, which copy answers, and
//! which copies to repair.
//!
//! A get waits for `read_quorum` copies, the local one included ([`copies_wanted`]), runs a
//! FIND_VALUE lookup until that many peers returned a copy, and answers the newest of all the
//! copies it saw ([`resolve`]); holders seen with an older copy are sent the newest (read
//! repair), and this node keeps it if its own copy is older.
//!
//! Implementation notes (departures from the paper): the paper's FIND_VALUE stops at the
//! first node that returns the value. Here a get waits for `read_quorum` copies (default 2),
//! so a replica that missed a write or a delete cannot answer alone; `read_quorum` 1 is the
//! paper's behaviour.

use super::message::Contact;
use super::store::Record;

/// Copies a get still wants from the network: `read_quorum`, less one when this node holds
/// a copy as a replica (`local_cached` false; a cached copy does not count, it may be stale).
pub fn copies_wanted(read_quorum: usize, local_cached: Option<bool>) -> usize {
    read_quorum.saturating_sub(usize::from(local_cached == Some(false)))
}

/// What a get's copies settle.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The newest copy seen, local or remote (a tombstone when the key was deleted);
    /// `None`: no copy anywhere.
    pub newest: Option<Record>,
    /// The local copy is the newest: the get answers from this node.
    pub local_is_newest: bool,
    /// This node's copy is older than the newest: keep the newest (read repair).
    pub adopt: bool,
    /// Holders seen with an older copy: send them the newest (read repair).
    pub repair: Vec<Contact>,
}

/// Settles a get from this node's copy and the copies the lookup's `holders` returned,
/// by [`Record::supersedes`], the order every replica settles conflicts by.
pub fn resolve(local: Option<&Record>, holders: &[(Contact, Record)]) -> Resolution {
    let newest = holders
        .iter()
        .map(|(_, r)| r)
        .chain(local)
        .fold(None::<&Record>, |best, r| match best {
            Some(b) if !r.supersedes(b) => Some(b),
            _ => Some(r),
        })
        .cloned();
    let Some(newest) = newest else {
        return Resolution {
            newest: None,
            local_is_newest: false,
            adopt: false,
            repair: Vec::new(),
        };
    };
    let repair = holders
        .iter()
        .filter(|(_, held)| newest.supersedes(held))
        .map(|(holder, _)| holder.clone())
        .collect();
    Resolution {
        local_is_newest: local.is_some_and(|l| !newest.supersedes(l)),
        adopt: local.is_some_and(|l| newest.supersedes(l)),
        repair,
        newest: Some(newest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::NodeId;
    use crate::kad::store::NEVER;

    fn copy(version: u64, tombstone: bool) -> Record {
        Record {
            key: NodeId([0; 20]),
            value: if tombstone {
                vec![]
            } else {
                format!("v{version}").into_bytes()
            },
            version,
            expires_at_ms: NEVER,
            tombstone,
            publisher: NodeId([9; 20]),
            user_key: "k".into(),
        }
    }

    fn holder(i: u8, r: Record) -> (Contact, Record) {
        (Contact::new(NodeId([i; 20]), format!("n{i}:1")), r)
    }

    #[test]
    fn the_local_replica_copy_counts_towards_the_read_quorum() {
        assert_eq!(copies_wanted(2, None), 2);
        assert_eq!(copies_wanted(2, Some(false)), 1);
        assert_eq!(
            copies_wanted(2, Some(true)),
            2,
            "a cached copy does not count"
        );
        assert_eq!(copies_wanted(1, Some(false)), 0);
        assert_eq!(copies_wanted(0, None), 0);
    }

    #[test]
    fn nothing_anywhere_resolves_to_nothing() {
        let r = resolve(None, &[]);
        assert_eq!(r.newest, None);
        assert!(!r.local_is_newest && !r.adopt && r.repair.is_empty());
    }

    #[test]
    fn the_newest_remote_copy_wins_and_older_holders_are_repaired() {
        let local = copy(3, false);
        let holders = [
            holder(1, copy(5, false)),
            holder(2, copy(4, false)),
            holder(3, copy(5, false)),
        ];
        let r = resolve(Some(&local), &holders);
        assert_eq!(r.newest, Some(copy(5, false)));
        assert!(!r.local_is_newest);
        assert!(r.adopt);
        let repaired: Vec<_> = r.repair.iter().map(|c| &*c.addr).collect();
        assert_eq!(repaired, vec!["n2:1"]);
    }

    #[test]
    fn a_newer_local_copy_answers_and_repairs_the_holders() {
        let local = copy(7, false);
        let r = resolve(
            Some(&local),
            &[holder(1, copy(5, false)), holder(2, copy(7, false))],
        );
        assert_eq!(r.newest, Some(local));
        assert!(r.local_is_newest && !r.adopt);
        assert_eq!(r.repair.len(), 1);
    }

    #[test]
    fn a_tombstone_wins_a_tie_and_a_delete_is_repaired_too() {
        let r = resolve(Some(&copy(5, false)), &[holder(1, copy(5, true))]);
        assert_eq!(r.newest, Some(copy(5, true)));
        assert!(r.adopt && !r.local_is_newest);
        let r = resolve(None, &[holder(1, copy(6, true)), holder(2, copy(4, false))]);
        assert!(r.newest.as_ref().is_some_and(|n| n.tombstone));
        assert_eq!(r.repair.len(), 1);
    }
}
