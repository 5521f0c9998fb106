//! Fixture minifilters for fltemu's verifier tests (filled in by the fltemu work).
