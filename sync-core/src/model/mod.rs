//! The case model (filled by the model work).
