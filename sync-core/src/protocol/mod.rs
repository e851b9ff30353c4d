//! automerge-repo's wire protocol: the messages and their codec.

pub mod message;

pub use message::{
    decode, encode, DecodeError, Message, PeerMetadata, RemoteHeads, PROTOCOL_VERSION,
};
