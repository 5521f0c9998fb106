//! The fltemu command line (filled in below).
fn main() {}
