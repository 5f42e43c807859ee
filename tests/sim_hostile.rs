//! Peers that lie, in an in-memory network: forged PING headers, a Sybil flood of ids from
//! one address, and a peer that answers every lookup with made-up closer contacts. Routing
//! tables keep the real addresses, no made-up id gets in, and lookups still find the true
//! closest nodes. (Without signed identities a host can answer under any id at its own
//! address; what it cannot do is plant contacts elsewhere or fill tables from one address.)

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::SimNet;
use kademlia::NodeId;
use kademlia::kad::{Contact, Envelope, Reply, Request, Response};
use kademlia::net::Inbound;
use kademlia::net::Transport;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;

fn ping_from(sender: Contact) -> Envelope {
    Envelope {
        sender,
        network_id: "kademlia".into(),
        body: Request::Ping,
    }
}

/// Every contact (and replacement) of every live node: (holder, contact).
async fn all_contacts(sim: &SimNet) -> Vec<(String, Contact)> {
    let mut out = Vec::new();
    for n in &sim.nodes {
        for b in n.handle.routes().await.unwrap() {
            for e in b.contacts.iter().chain(&b.replacements) {
                out.push((n.addr.clone(), e.contact.clone()));
            }
        }
    }
    out
}

/// A host at `addr` that answers every request with what `answer` says (its own contact
/// given as the responder).
fn adversary(
    sim: &SimNet,
    addr: &str,
    answer: impl Fn(&Envelope) -> Reply + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Inbound>(1024);
    sim.net.attach(addr, tx);
    tokio::spawn(async move {
        while let Some(Inbound {
            envelope, reply, ..
        }) = rx.recv().await
        {
            let _ = reply.send(Ok(answer(&envelope)));
        }
    })
}

/// The ids of the `k` live nodes closest to `key` (plus `extra` ids that also answer).
fn truth(sim: &SimNet, key: &NodeId, extra: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = sim
        .nodes
        .iter()
        .map(|n| n.handle.id())
        .chain(extra.iter().copied())
        .collect();
    ids.sort_by_key(|i| i.distance(key));
    ids.truncate(k);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_pings_neither_plant_nor_re_point_contacts() {
    let sim = SimNet::build(71, 30, 30).await;
    let transport = sim.net.transport();
    let victims: Vec<usize> = vec![0, 3, 9, 17];
    // A real node's id at a dead address, sent to each victim.
    let real = &sim.nodes[5];
    let real_addr = real.addr.clone();
    for &v in &victims {
        let r = transport
            .send(
                &sim.nodes[v].addr,
                ping_from(Contact::new(real.handle.id(), "dead:50051")),
            )
            .await;
        assert!(r.is_ok(), "{r:?}");
    }
    // Made-up ids at addresses where nobody answers.
    let mut rng = StdRng::seed_from_u64(7);
    let made_up: Vec<NodeId> = (0..50).map(|_| NodeId::random(&mut rng)).collect();
    for (i, id) in made_up.iter().enumerate() {
        for &v in &victims {
            let sender = Contact::new(*id, format!("ghost-{i}:50051"));
            let _ = transport.send(&sim.nodes[v].addr, ping_from(sender)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let contacts = all_contacts(&sim).await;
    let made_up: HashSet<NodeId> = made_up.into_iter().collect();
    for (holder, c) in &contacts {
        assert!(!made_up.contains(&c.id), "{holder} learned made-up {c:?}");
        assert!(&*c.addr != "dead:50051", "{holder} holds {c:?}");
        if c.id == real.handle.id() {
            assert_eq!(&*c.addr, &*real_addr, "{holder} re-pointed the real node");
        }
    }
    // The real node is still reached where it is.
    let (_, located) = sim.nodes[0]
        .handle
        .locate(real.handle.id().to_hex())
        .await
        .unwrap();
    assert!(located.iter().all(|l| &*l.contact.addr != "dead:50051"));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sybil_flood_from_one_address_holds_one_contact_at_most() {
    let sim = SimNet::build(72, 30, 30).await;
    // The Sybil host answers each PING under a fresh made-up id.
    let sybil_addr = "sybil:50051";
    let _host = adversary(&sim, sybil_addr, {
        let rng = std::sync::Mutex::new(StdRng::seed_from_u64(9));
        move |env| Reply {
            responder: Contact::new(NodeId::random(&mut *rng.lock().unwrap()), sybil_addr),
            body: match env.body {
                Request::Ping => Response::Pong,
                _ => Response::Nodes { closer: vec![] },
            },
        }
    });
    let transport = sim.net.transport();
    let mut rng = StdRng::seed_from_u64(10);
    for i in 0..1000 {
        let target = &sim.nodes[i % 5].addr;
        let sender = Contact::new(NodeId::random(&mut rng), sybil_addr);
        let _ = transport.send(target, ping_from(sender)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let contacts = all_contacts(&sim).await;
    for n in &sim.nodes[..5] {
        let at_sybil = contacts
            .iter()
            .filter(|(h, c)| *h == n.addr && &*c.addr == sybil_addr)
            .count();
        assert!(
            at_sybil <= 1,
            "{} holds {at_sybil} contacts at the Sybil",
            n.addr
        );
    }
    // Lookups still find the true closest nodes (the Sybil answers nothing useful).
    for i in 0..16 {
        let key = format!("sybil-key-{i}");
        let (target, located) = sim.nodes[i % 5].handle.locate(key).await.unwrap();
        let got: HashSet<NodeId> = located
            .iter()
            .filter(|l| &*l.contact.addr != sybil_addr)
            .map(|l| l.contact.id)
            .collect();
        let want: HashSet<NodeId> = truth(&sim, &target, &[], got.len()).into_iter().collect();
        assert_eq!(got, want, "lookup {i} missed true closest nodes");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_lookups_with_made_up_contacts_does_not_mislead_them() {
    let mut sim = SimNet::build(73, 40, 40).await;
    let liar_id = NodeId::random(&mut sim.rng);
    let liar_addr = "liar:50051";
    let fakes = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let _liar = adversary(&sim, liar_addr, {
        let fakes = fakes.clone();
        let rng = std::sync::Mutex::new(StdRng::seed_from_u64(11));
        move |env| {
            let me = Contact::new(liar_id, liar_addr);
            let target = match &env.body {
                Request::FindNode { target, .. } => Some(*target),
                Request::FindValue { key, .. } => Some(*key),
                _ => None,
            };
            let Some(target) = target else {
                let body = match env.body {
                    Request::Store { .. } => Response::Stored {
                        stored: true,
                        current_version: 0,
                    },
                    _ => Response::Pong,
                };
                return Reply {
                    responder: me,
                    body,
                };
            };
            // k fresh ids closer to the target than anyone: half at its own address, half
            // at addresses where nobody answers.
            let mut rng = rng.lock().unwrap();
            let closer: Vec<Contact> = (0..20)
                .map(|i| {
                    let mut id = target;
                    id.0[19] ^= 1 + (rand::Rng::random::<u8>(&mut *rng) >> 1);
                    id.0[18] ^= rand::Rng::random::<u8>(&mut *rng);
                    fakes.lock().unwrap().insert(id);
                    let addr = if i % 2 == 0 {
                        liar_addr.to_string()
                    } else {
                        format!("nowhere-{}:50051", id.short())
                    };
                    Contact::new(id, addr)
                })
                .collect();
            let body = match env.body {
                Request::FindNode { .. } => Response::Nodes { closer },
                _ => Response::Value {
                    record: None,
                    closer,
                },
            };
            Reply {
                responder: me,
                body,
            }
        }
    });
    // The liar introduces itself to everyone (and proves its address when pinged back).
    let transport = sim.net.transport();
    for n in &sim.nodes {
        let _ = transport
            .send(&n.addr, ping_from(Contact::new(liar_id, liar_addr)))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let knows_liar = all_contacts(&sim)
        .await
        .iter()
        .filter(|(_, c)| c.id == liar_id)
        .count();
    assert!(knows_liar >= 20, "only {knows_liar} nodes learned the liar");

    for i in 0..20 {
        let key = format!("liar-key-{i}");
        let from = &sim.nodes[i % sim.nodes.len()].handle;
        let (target, located) = from.locate(key.clone()).await.unwrap();
        let got: Vec<NodeId> = located.iter().map(|l| l.contact.id).collect();
        let want = truth(&sim, &target, &[liar_id], 20);
        assert_eq!(
            got, want,
            "lookup for {key} did not find the true closest nodes"
        );
        // Writes and reads go to the real replicas.
        from.put(key.clone(), b"v".to_vec(), None).await.unwrap();
        let other = &sim.nodes[(i + 7) % sim.nodes.len()].handle;
        assert_eq!(other.get(key).await.unwrap().value, b"v".to_vec());
    }
    let fakes = fakes.lock().unwrap().clone();
    assert!(
        fakes.len() > 100,
        "the liar was asked only {} times",
        fakes.len()
    );
    for (holder, c) in all_contacts(&sim).await {
        assert!(!fakes.contains(&c.id), "{holder} learned made-up {c:?}");
    }
    sim.shutdown().await;
}
