//! Applying plans to hosts: a push over one connection, the worker pool, the
//! live workers of `watch`, what they keep of refused paths and the status file
//! they keep current, post_sync, and which tier serves a host.

pub(crate) mod live;
pub(crate) mod pending;
pub(crate) mod pool;
pub(crate) mod post_sync;
pub(crate) mod probe;
pub(crate) mod push;
pub(crate) mod status;
pub(crate) mod tier;
