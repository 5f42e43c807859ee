//! Hostile nodes for `kademlia simulate --adversarial F`: real nodes (they join, refresh and
//! answer PINGs like any other, so honest nodes keep them in their buckets) whose answers to
//! the other RPCs are lies, put in front of their inbound queue.
//!
//! - FIND_NODE and FIND_VALUE: the adversaries closest to the target, never a value and never
//!   an honest node, so a lookup that trusts them stays among them (an eclipse);
//! - STORE: "stored" without storing, so a write they acknowledge is on fewer honest replicas
//!   than it counts.
//!
//! Every other request (PING) goes to the node itself, and its answer names the responder
//! that the lies then reuse, so the adversary looks like one consistent node.
//!
//! Implementation notes: the adversaries know each other (one shared list), as a Sybil
//! attacker's nodes would, and they never lie about their own ids or addresses: every contact
//! they name exists and answers.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::K;
use crate::kad::message::reply_count;
use crate::kad::{Contact, NodeId, Reply, Request, Response};
use crate::net::Inbound;

/// The contacts of every adversary, shared by all of them.
pub type Adversaries = Arc<Mutex<Vec<Contact>>>;

/// Inbound queue of an adversary: requests sent to it reach [`lie`] first.
pub const QUEUE: usize = 1024;

/// Answers the requests arriving on `rx` for the node whose own queue is `node`, lying as the
/// module describes, until every sender is gone.
pub async fn lie(mut rx: mpsc::Receiver<Inbound>, node: mpsc::Sender<Inbound>, all: Adversaries) {
    let mut me: Option<Contact> = None;
    while let Some(inbound) = rx.recv().await {
        let body = match (&me, &inbound.envelope.body) {
            (Some(_), Request::FindNode { target, count }) => Some(Response::Nodes {
                closer: closest(&all, target, reply_count(*count, K)),
            }),
            (Some(_), Request::FindValue { key, count, .. }) => Some(Response::Value {
                record: None,
                closer: closest(&all, key, reply_count(*count, K)),
            }),
            (Some(_), Request::Store { record, .. }) => Some(Response::Stored {
                stored: true,
                current_version: record.version,
            }),
            _ => None,
        };
        match (body, &me) {
            (Some(body), Some(responder)) => {
                let reply = Reply {
                    responder: responder.clone(),
                    body,
                };
                let _ = inbound.reply.send(Ok(reply));
            }
            _ => {
                // The node answers for itself; its answer tells who "itself" is.
                let (tx, answer) = oneshot::channel();
                let Inbound {
                    envelope,
                    source,
                    reply,
                } = inbound;
                let forwarded = Inbound {
                    envelope,
                    source,
                    reply: tx,
                };
                if node.send(forwarded).await.is_err() {
                    return;
                }
                // A node that stopped answers nothing (dropping `reply` says so).
                let Ok(result) = answer.await else { continue };
                if let Ok(r) = &result {
                    me.get_or_insert_with(|| r.responder.clone());
                }
                let _ = reply.send(result);
            }
        }
    }
}

/// The `count` adversaries closest to `target`.
fn closest(all: &Adversaries, target: &NodeId, count: usize) -> Vec<Contact> {
    let all = all.lock().unwrap_or_else(|e| e.into_inner());
    let mut found: Vec<Contact> = all.clone();
    found.sort_by_key(|c| c.id.distance(target));
    found.truncate(count);
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::{Envelope, Record};

    fn id(b: u8) -> NodeId {
        NodeId([b; 20])
    }

    async fn ask(tx: &mpsc::Sender<Inbound>, body: Request) -> Reply {
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope {
            sender: Contact::new(id(0xee), "honest:1"),
            network_id: "kademlia".into(),
            body,
        };
        let inbound = Inbound {
            envelope,
            source: None,
            reply,
        };
        tx.send(inbound).await.unwrap();
        answer.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn pings_reach_the_node_and_the_rest_are_lies_in_its_name() {
        let me = Contact::new(id(1), "adversary-1:1");
        // The node behind the lies answers PINGs and counts what reaches it.
        let (node_tx, mut node_rx) = mpsc::channel::<Inbound>(8);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (responder, log) = (me.clone(), seen.clone());
        tokio::spawn(async move {
            while let Some(i) = node_rx.recv().await {
                log.lock().unwrap().push(i.envelope.body.name());
                let body = Response::Pong;
                let _ = i.reply.send(Ok(Reply {
                    responder: responder.clone(),
                    body,
                }));
            }
        });
        let all: Adversaries = Arc::new(Mutex::new(vec![
            me.clone(),
            Contact::new(id(0x80), "adversary-2:1"),
            Contact::new(id(0x10), "adversary-3:1"),
        ]));
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(lie(rx, node_tx, all));

        let pong = ask(&tx, Request::Ping).await;
        assert_eq!(
            (pong.responder.clone(), pong.body),
            (me.clone(), Response::Pong)
        );

        let target = id(0x11);
        let count = 2;
        let nodes = ask(&tx, Request::FindNode { target, count }).await;
        assert_eq!(nodes.responder, me);
        let closer = vec![
            Contact::new(id(0x10), "adversary-3:1"),
            Contact::new(id(1), "adversary-1:1"),
        ];
        assert_eq!(
            nodes.body,
            Response::Nodes {
                closer: closer.clone()
            }
        );

        let find_value = Request::FindValue {
            key: target,
            count,
            omit_value: false,
        };
        let value = ask(&tx, find_value).await;
        assert_eq!(
            value.body,
            Response::Value {
                record: None,
                closer
            }
        );

        let record = Record {
            key: target,
            value: b"v".to_vec(),
            version: 42,
            expires_at_ms: crate::kad::store::NEVER,
            tombstone: false,
            publisher: id(0xee),
            user_key: "k".into(),
        };
        let cached = false;
        let stored = ask(&tx, Request::Store { record, cached }).await;
        let claimed = Response::Stored {
            stored: true,
            current_version: 42,
        };
        assert_eq!(stored.body, claimed);
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["PING"],
            "only the PING reached the node"
        );
    }
}
