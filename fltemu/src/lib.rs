//! fltemu: an emulated Filter Manager that runs a minifilter `.sys` in a Linux process.
