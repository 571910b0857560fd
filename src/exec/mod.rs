//! Applying plans to hosts: a push over one connection, the worker pool, the
//! live workers of `watch` and what they keep of refused paths, post_sync.

pub(crate) mod live;
pub(crate) mod pending;
pub(crate) mod pool;
pub(crate) mod post_sync;
pub(crate) mod probe;
pub(crate) mod push;
