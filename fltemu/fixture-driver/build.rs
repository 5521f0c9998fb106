//! The fixture links like ctxguard.sys: it reuses the workspace build script.
// The fixture has no `wdk` feature; the shared build script mentions it.
#![allow(unexpected_cfgs)]
include!("../../build.rs");
