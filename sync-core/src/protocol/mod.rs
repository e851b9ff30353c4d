//! The automerge-repo protocol.
