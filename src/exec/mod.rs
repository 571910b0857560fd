//! Applying plans to hosts: a push over one connection, the worker pool, the
//! live workers of `watch`, post_sync, and which tier serves a host.

pub(crate) mod live;
pub(crate) mod pool;
pub(crate) mod post_sync;
pub(crate) mod probe;
pub(crate) mod push;
pub(crate) mod tier;
