//! A per-source-address rate limit on the peer service: a token bucket per remote IP
//! (`peer_rate_limit` requests per second, bursts of twice that), so that one host cannot
//! take a node's whole peer budget ([`super::admission`]) while others wait. A request beyond
//! its bucket is refused at once with RESOURCE_EXHAUSTED naming the limit. Each frame on a peer
//! stream takes a token too (`super::exchange`), so streams do not get around the limit.
//!
//! Why hand-written: tower's `RateLimit` is one bucket for all callers and waits instead of
//! refusing; governor would do, but a bucket per IP in a bounded map is a few lines.
//!
//! # Implementation notes
//! - At most [`MAX_TRACKED_SOURCES`] addresses are tracked; when the map is full, addresses
//!   whose buckets have refilled are forgotten, and if none has, all are (a flood from more
//!   addresses than that is bounded by the admission layer instead).
//! - Requests without a known remote address (never over TCP) are not limited.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Source addresses whose buckets are kept at most.
pub const MAX_TRACKED_SOURCES: usize = 65_536;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Limits the requests per second from each remote IP; see the module doc.
#[derive(Clone)]
pub struct RateLimitLayer {
    per_second: u32,
    buckets: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl RateLimitLayer {
    /// `per_second` requests per second from each IP, in bursts of up to twice that; 0: no
    /// limit.
    pub fn new(per_second: u32) -> Self {
        RateLimitLayer {
            per_second,
            buckets: Arc::default(),
        }
    }

    fn burst(&self) -> f64 {
        2.0 * f64::from(self.per_second)
    }

    /// Takes a token from `ip`'s bucket at `now`; false when it is empty.
    fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let (rate, burst) = (f64::from(self.per_second), self.burst());
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_SOURCES && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| refill(b) < burst);
            if buckets.len() >= MAX_TRACKED_SOURCES {
                buckets.clear();
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = refill(b);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl RateLimitLayer {
    /// Admits one request from `ip` now, or the RESOURCE_EXHAUSTED status that refuses it.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), tonic::Status> {
        if self.admit(ip, Instant::now()) {
            return Ok(());
        }
        Err(tonic::Status::resource_exhausted(format!(
            "node is overloaded: {ip} sends more than {} peer requests per second; retry later",
            self.per_second
        )))
    }
}

impl<S> tower_layer::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service wrapped by [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S: NamedService> NamedService for RateLimit<S> {
    const NAME: &'static str = S::NAME;
}

/// The remote IP tonic recorded for the request's connection (plain TCP or TLS).
fn source<B>(req: &http::Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip())
}

impl<S, B> tower_service::Service<http::Request<B>> for RateLimit<S>
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
        match source(&req).map(|ip| self.layer.check(ip)) {
            Some(Err(status)) => Box::pin(std::future::ready(Ok(status.into_http()))),
            _ => Box::pin(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_source_gets_its_own_bucket_which_refills() {
        let limit = RateLimitLayer::new(10);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let admitted = (0..50).filter(|_| limit.admit(a, t0)).count();
        assert_eq!(admitted, 20, "a burst of twice the rate");
        assert!(limit.admit(b, t0), "another source is not held back");
        assert!(!limit.admit(a, t0));
        // Half a second later: five more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..50).filter(|_| limit.admit(a, t1)).count(), 5);
        let off = RateLimitLayer::new(0);
        assert!((0..10_000).all(|_| off.admit(a, t0)));
    }

    #[test]
    fn the_tracked_sources_stay_bounded() {
        let limit = RateLimitLayer::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 10) {
            limit.admit(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(limit.buckets.lock().unwrap().len() <= MAX_TRACKED_SOURCES);
    }
}
