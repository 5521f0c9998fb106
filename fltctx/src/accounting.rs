//! The accounting hook: the driver, not this crate, decides what to count.
//!
//! Every payload names an [`Accounting`] type in [`contexts!`](crate::contexts); the guards call
//! its functions at each step of a context's life. All default to nothing, and `()` is the
//! hook that counts nothing. They are called wherever the step happens, at any IRQL up to
//! DISPATCH_LEVEL (a release may free at DISPATCH, B10), so they must only touch atomics.

use crate::kind::ContextKind;

/// Hooks called by the guards; statics the driver owns are where the counts go.
pub trait Accounting: 'static {
    /// FltAllocateContext succeeded.
    fn allocated(kind: ContextKind) {
        let _ = kind;
    }
    /// A set linked our context.
    fn attached(kind: ContextKind) {
        let _ = kind;
    }
    /// A KEEP_IF_EXISTS set lost to an attached context (ours was released).
    fn collided(kind: ContextKind) {
        let _ = kind;
    }
    /// A REPLACE_IF_EXISTS set handed back the context it replaced.
    fn replaced(kind: ContextKind) {
        let _ = kind;
    }
    /// A delete unlinked a context.
    fn deleted(kind: ContextKind) {
        let _ = kind;
    }
    /// The cleanup callback dropped a payload.
    fn freed(kind: ContextKind) {
        let _ = kind;
    }
}

/// Counts nothing.
impl Accounting for () {}
