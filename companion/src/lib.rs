//! The companion's library half: the port client, shared by the `ctxguard` binary and the
//! workspace's end-to-end tests (which drive it against ctxguard.sys in fltemu).

pub mod port;
