//! The node's two clocks: the monotonic one that paces its timers, RPCs and lookups, and the
//! wall clock that dates records (versions, expiry).
//!
//! Both follow tokio's clock. In a node that is the system's clocks, read through tokio; in a
//! simulation ([`crate::sim`]), whose runtime starts with its clock paused, tokio moves time
//! forward to the next timer whenever every task waits, so hours of maintenance run in
//! seconds. [`simulate_wall_clock`] makes the wall clock follow that simulated time too.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

/// Set once by [`simulate_wall_clock`]: the wall clock then and tokio's clock then.
static SIMULATED_WALL: OnceLock<(SystemTime, tokio::time::Instant)> = OnceLock::new();

/// The monotonic clock (tokio's: simulated when its runtime's clock is paused).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall clock: the system's, or, after [`simulate_wall_clock`], the wall clock at that
/// moment moved on by the (simulated) time since.
pub fn wall() -> SystemTime {
    match SIMULATED_WALL.get() {
        Some((at, since)) => *at + since.elapsed(),
        None => SystemTime::now(),
    }
}

/// Makes [`wall`] follow tokio's clock from now on, for the rest of the process: call it
/// inside the simulation's runtime, before its first node starts.
pub fn simulate_wall_clock() {
    SIMULATED_WALL.get_or_init(|| (SystemTime::now(), tokio::time::Instant::now()));
}
