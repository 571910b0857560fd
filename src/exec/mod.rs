//! Applying plans to hosts: a push over one connection, the worker pool, the
//! live workers of `watch`, post_sync.

pub mod live;
pub mod pool;
pub mod post_sync;
pub mod push;
