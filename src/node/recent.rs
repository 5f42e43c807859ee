//! The last lookups this node ran, each with the contacts it queried and the round in which
//! it learned each: what the node's page and `kademlia routes --svg` draw as paths
//! converging on their targets (`crate::picture`). Bounded: the newest [`RECENT_LOOKUPS`].

use std::collections::VecDeque;

use crate::kad::NodeId;
use crate::kad::lookup::Visit;

/// Lookups kept for the picture.
pub const RECENT_LOOKUPS: usize = 16;

/// One finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupPath {
    /// Counts lookups since the node started (the newest has the highest).
    pub seq: u64,
    pub target: NodeId,
    /// `find_node`, `find_value` or `survey` (`kad::lookup::Mode::label`).
    pub kind: &'static str,
    /// Who it queried, closest to the target first.
    pub visits: Vec<Visit>,
    /// It found a record.
    pub found: bool,
}

/// The newest [`RECENT_LOOKUPS`] lookups.
#[derive(Default)]
pub struct Recent {
    paths: VecDeque<LookupPath>,
    next: u64,
}

impl Recent {
    pub fn record(&mut self, target: NodeId, kind: &'static str, visits: Vec<Visit>, found: bool) {
        if self.paths.len() == RECENT_LOOKUPS {
            self.paths.pop_front();
        }
        self.paths.push_back(LookupPath {
            seq: self.next,
            target,
            kind,
            visits,
            found,
        });
        self.next += 1;
    }

    /// Oldest first.
    pub fn list(&self) -> Vec<LookupPath> {
        self.paths.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lookups_in_order() {
        let mut r = Recent::default();
        for i in 0..(RECENT_LOOKUPS as u8 + 3) {
            r.record(NodeId::hash(&[i]), "find_node", Vec::new(), i % 2 == 0);
        }
        let list = r.list();
        assert_eq!(list.len(), RECENT_LOOKUPS);
        assert_eq!(list[0].seq, 3);
        assert_eq!(list[0].target, NodeId::hash(&[3]));
        assert_eq!(list.last().unwrap().seq, RECENT_LOOKUPS as u64 + 2);
        assert!(list.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }
}
