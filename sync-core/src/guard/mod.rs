//! TEMPORARY interface shim; replaced by the guard branch on merge.
use automerge::sync::SyncDoc;
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
}
impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
        }
    }
}
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    #[error("frame too large")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("automerge: {0}")]
    Automerge(String),
    #[error("malformed: {0}")]
    Malformed(&'static str),
}
pub fn check_frame_size(len: usize, l: &Limits) -> Result<(), GuardError> {
    if len > l.max_frame_bytes {
        Err(GuardError::FrameTooLarge {
            size: len,
            limit: l.max_frame_bytes,
        })
    } else {
        Ok(())
    }
}
pub fn check_cbor(_b: &[u8], _l: &Limits) -> Result<(), GuardError> {
    Ok(())
}
pub fn receive_sync_message(
    doc: &mut automerge::Automerge,
    state: &mut automerge::sync::State,
    bytes: &[u8],
    _l: &Limits,
) -> Result<(), GuardError> {
    let m = automerge::sync::Message::decode(bytes)
        .map_err(|e| GuardError::Automerge(e.to_string()))?;
    doc.receive_sync_message(state, m)
        .map_err(|e| GuardError::Automerge(e.to_string()))
}
pub fn decode_sync_state(bytes: &[u8], _l: &Limits) -> Result<automerge::sync::State, GuardError> {
    automerge::sync::State::decode(bytes).map_err(|e| GuardError::Automerge(e.to_string()))
}
pub fn load_document(bytes: &[u8], _l: &Limits) -> Result<automerge::Automerge, GuardError> {
    automerge::Automerge::load(bytes).map_err(|e| GuardError::Automerge(e.to_string()))
}
