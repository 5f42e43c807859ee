//! Admission control on the gRPC server: a tower layer that bounds the requests one service
//! handles at once and sheds the rest at once with RESOURCE_EXHAUSTED ("node is overloaded"),
//! instead of queueing them without bound.
//!
//! The peer service and the client service each get their own budget
//! ([`PEER_REQUESTS_IN_FLIGHT`], [`CLIENT_REQUESTS_IN_FLIGHT`]), so a flood of peer requests
//! cannot take the capacity clients need, nor the other way round; health and reflection are
//! not limited, so probes keep answering under load. A peer stream's call holds a permit only
//! until the stream is open; each frame on it then takes one of the peer budget's permits
//! until it is answered (`super::exchange`). The layer keeps the wrapped service's
//! gRPC name, which tonic's router needs. The server adds the rest of the admission: a
//! deadline per request and a limit on HTTP/2 streams per connection (`server`).
//!
//! Why hand-written: tower's `ConcurrencyLimit` waits for a permit (a queue, the thing to
//! avoid) and `LoadShed` answers with an error tonic can only turn into UNKNOWN; a permit
//! taken with `try_acquire` and a gRPC status are a few lines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::server::NamedService;

/// Peer requests (PING, STORE, FIND_NODE, FIND_VALUE) handled at once at most.
pub const PEER_REQUESTS_IN_FLIGHT: usize = 2048;
/// Client requests (put, get, ...) handled at once at most: twice the operations a node runs
/// at once (`node::MAX_OPERATIONS`), since gets answered locally are not operations.
pub const CLIENT_REQUESTS_IN_FLIGHT: usize = 1024;

/// Bounds the requests a service handles at once; see the module doc.
#[derive(Clone)]
pub struct AdmissionLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    what: &'static str,
}

impl AdmissionLayer {
    /// At most `limit` requests at once; `what` names them in the refusal ("peer", "client").
    pub fn new(limit: usize, what: &'static str) -> Self {
        AdmissionLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            what,
        }
    }
}

impl AdmissionLayer {
    /// A permit to handle one request, held until it is answered, or the RESOURCE_EXHAUSTED
    /// status that sheds it.
    pub(crate) fn try_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, tonic::Status> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            tonic::Status::resource_exhausted(format!(
                "node is overloaded: {} {} requests in flight; retry later",
                self.limit, self.what
            ))
        })
    }
}

impl<S> tower_layer::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service wrapped by [`AdmissionLayer`].
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for Admission<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.layer.try_permit() {
            Ok(permit) => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let response = fut.await;
                    drop(permit);
                    response
                })
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower_layer::Layer;
    use tower_service::Service;

    /// A service whose calls take 50 ms.
    #[derive(Clone)]
    struct Slow;

    impl NamedService for Slow {
        const NAME: &'static str = "test.Slow";
    }

    impl Service<http::Request<()>> for Slow {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(http::Response::new(tonic::body::Body::default()))
            })
        }
    }

    fn grpc_status(r: &http::Response<tonic::body::Body>) -> Option<String> {
        r.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_shed_at_once_and_slots_come_back() {
        let svc = AdmissionLayer::new(3, "peer").layer(Slow);
        assert_eq!(<Admission<Slow> as NamedService>::NAME, "test.Slow");
        let calls: Vec<_> = (0..10)
            .map(|_| svc.clone().call(http::Request::new(())))
            .collect();
        let started = std::time::Instant::now();
        let results = futures::future::join_all(calls).await;
        let refused: Vec<_> = results
            .iter()
            .map(|r| grpc_status(r.as_ref().unwrap()))
            .filter(|s| s.as_deref() == Some("8")) // RESOURCE_EXHAUSTED
            .collect();
        assert_eq!(refused.len(), 7);
        assert!(started.elapsed() < Duration::from_millis(500));
        let message = results
            .iter()
            .filter_map(|r| r.as_ref().unwrap().headers().get("grpc-message"))
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(message.contains("overloaded"), "{message}");
        // The permits came back: three more are admitted.
        let again: Vec<_> = (0..3)
            .map(|_| svc.clone().call(http::Request::new(())))
            .collect();
        for r in futures::future::join_all(again).await {
            assert_eq!(grpc_status(&r.unwrap()), None);
        }
    }
}
