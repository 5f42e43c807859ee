//! The client-facing `kademlia.v1.Dht` service, a thin layer over [`NodeHandle`]. Put, get
//! and delete also arrive as frames on `Stream` streams, served by `super::client_stream`
//! with the same conversions (the functions below) and the same admission budget.

use std::time::Duration;

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::client_stream::{self, ClientFrameGuards};
use super::pb;
use crate::node::NodeHandle;

/// Serves put/get and the operator's views for one node.
#[derive(Clone)]
pub struct DhtService {
    node: NodeHandle,
    /// What frames on `Stream` streams are checked against; `None`: no streams.
    streams: Option<Arc<ClientFrameGuards>>,
}

impl DhtService {
    pub fn new(node: NodeHandle) -> Self {
        DhtService {
            node,
            streams: None,
        }
    }

    /// The same service serving `Stream` streams, each frame checked by `guards`.
    pub(crate) fn with_streams(mut self, guards: ClientFrameGuards) -> Self {
        self.streams = Some(Arc::new(guards));
        self
    }
}

/// Put: the write's answer once its quorum has stored it.
pub(crate) async fn put(node: &NodeHandle, m: pb::PutRequest) -> Result<pb::PutResponse, Status> {
    debug!(key = %m.key, bytes = m.value.len(), "client put");
    let ttl = m.ttl_seconds.map(Duration::from_secs);
    let r = node.put(m.key, m.value, ttl).await?;
    Ok(pb::PutResponse {
        key_id: r.key_id.to_hex(),
        version: r.version,
        replicas: r.stored_at.len() as u32,
        stored_at: r.stored_at,
    })
}

/// Get: the value, or NOT_FOUND.
pub(crate) async fn get(node: &NodeHandle, m: pb::GetRequest) -> Result<pb::GetResponse, Status> {
    debug!(key = %m.key, "client get");
    let r = node.get(m.key).await?;
    Ok(pb::GetResponse {
        value: r.value,
        version: r.version,
        expires_at_ms: r.expires_at_ms,
        key_id: r.key_id.to_hex(),
        local: r.local,
        hops: r.hops,
        queried: r.queried,
    })
}

/// Delete: the tombstone's answer once its quorum has stored it.
pub(crate) async fn delete(
    node: &NodeHandle,
    m: pb::DeleteRequest,
) -> Result<pb::DeleteResponse, Status> {
    debug!(key = %m.key, "client delete");
    let r = node.delete(m.key).await?;
    Ok(pb::DeleteResponse {
        key_id: r.key_id.to_hex(),
        version: r.version,
        replicas: r.stored_at.len() as u32,
    })
}

#[tonic::async_trait]
impl pb::dht_server::Dht for DhtService {
    type StreamStream = client_stream::Replies;

    async fn stream(
        &self,
        req: Request<Streaming<pb::ClientRequestFrame>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let Some(guards) = self.streams.clone() else {
            return Err(Status::unimplemented(
                "this node serves put, get and delete as unary calls only",
            ));
        };
        let opened = req.remote_addr().map(|r| guards.open.open(r)).transpose()?;
        Ok(Response::new(client_stream::serve(
            self.node.clone(),
            guards,
            req.into_inner(),
            opened,
        )))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        put(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        get(&self.node, req.into_inner()).await.map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        delete(&self.node, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        let (key, nodes) = self.node.locate(req.into_inner().key).await?;
        let nodes = nodes
            .into_iter()
            .map(|n| pb::LocatedNode {
                node_id: n.contact.id.to_hex(),
                distance: n.contact.id.distance(&key).to_hex(),
                address: n.contact.addr.to_string(),
                has_value: n.has_value,
                version: n.version,
                tombstone: n.tombstone,
            })
            .collect();
        Ok(Response::new(pb::LocateResponse {
            key_id: key.to_hex(),
            nodes,
        }))
    }

    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let i = self.node.info().await?;
        Ok(Response::new(pb::InfoResponse {
            node_id: i.id.to_hex(),
            address: i.addr,
            network_id: i.network_id,
            peers: i.peers as u32,
            records: i.records as u32,
            joined: i.joined,
            k: i.k as u32,
            alpha: i.alpha as u32,
            uptime_seconds: i.uptime.as_secs(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            stale_peers: i.stale_peers as u32,
            operations: i.load.operations as u32,
            rpcs_in_flight: i.load.rpcs.in_flight as u32,
            rpcs_queued: i.load.rpcs.queued as u32,
            maintenance_running: i.load.jobs.running as u32,
            maintenance_queued: i.load.jobs.queued as u32,
            rpcs_refused: i.load.rpcs.refused,
            requests_shed: i.load.rpcs.shed,
        }))
    }

    async fn routing_table(
        &self,
        _: Request<pb::RoutingTableRequest>,
    ) -> Result<Response<pb::RoutingTableResponse>, Status> {
        let buckets = self.node.routes().await?;
        let entry = |e: crate::node::RouteEntry| pb::BucketEntry {
            node_id: e.contact.id.to_hex(),
            address: e.contact.addr.to_string(),
            last_seen_ms_ago: e.last_seen_ago.as_millis() as u64,
            failures: e.failures,
        };
        Ok(Response::new(pb::RoutingTableResponse {
            node_id: self.node.id().to_hex(),
            buckets: buckets
                .into_iter()
                .map(|b| pb::Bucket {
                    index: b.index as u32,
                    contacts: b.contacts.into_iter().map(entry).collect(),
                    replacements: b.replacements.into_iter().map(entry).collect(),
                })
                .collect(),
        }))
    }

    async fn picture(
        &self,
        req: Request<pb::PictureRequest>,
    ) -> Result<Response<pb::PictureResponse>, Status> {
        let key = req.into_inner().highlight_key;
        let highlight = (!key.is_empty()).then(|| crate::kad::NodeId::hash(key.as_bytes()));
        let snapshot = self.node.snapshot().await?;
        Ok(Response::new(pb::PictureResponse {
            svg: crate::picture::render(&snapshot, highlight, false),
        }))
    }
}
