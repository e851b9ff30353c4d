//! Input guards (filled by the guard work).
