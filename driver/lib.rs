//! ctxguard.sys — a file-system minifilter whose context references cannot leak.
//!
//! Layers, each importing only those below it (tests/driver_layers.rs checks it):
//! [`registration`] (the FLT_REGISTRATION, DriverEntry, unload) → [`port`] → [`instance`],
//! [`operations`] (the callbacks) → [`events`] → [`clients`]; and [`payloads`] (what the
//! contexts carry, on fltctx's guards) → [`accounting`]; [`callback`], [`user_buffer`] and
//! [`kernel`] at the bottom. The context guards themselves are the fltctx crate.
//! The [`kernel`] corner holds what a `no_std` image needs from its environment.
//!
//! On a non-Windows host the crate is empty: the driver is only ever built for the
//! `*-pc-windows-msvc` targets, and checked on Linux by running that image in fltemu.
#![cfg_attr(target_os = "windows", no_std)]
#![cfg(target_os = "windows")]

extern crate alloc;

#[macro_use]
pub mod kernel;

pub mod accounting;
pub mod callback;
pub mod clients;
pub mod events;
pub mod instance;
pub mod operations;
pub mod payloads;
pub mod port;
pub mod registration;
pub mod user_buffer;
