//! The companion's library half: the port client and the selftest core, shared by the
//! `ctxguard` binary and the workspace's end-to-end tests (which drive them against ctxguard.sys
//! in fltemu).

pub mod port;
pub mod selftest;
