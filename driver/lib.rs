//! ctxguard.sys — a file-system minifilter whose context references cannot leak.
//!
//! Data flows one way: Filter Manager → callbacks ([`registration`], [`instance`],
//! [`operations`]) → contexts ([`context`]) and accounting → the communication port.
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
pub mod context;
pub mod events;
pub mod instance;
pub mod operations;
pub mod port;
pub mod registration;
pub mod user_buffer;
