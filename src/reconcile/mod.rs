//! What to change on a host: the local view and the remote listing in, a plan out.

pub mod render;
pub mod skip;
