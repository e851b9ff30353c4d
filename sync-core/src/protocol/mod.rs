//! automerge-repo's wire protocol: the messages and their codec.

pub mod message;

pub use message::{
    decode, decode_head, encode, encode_head, DecodeError, Message, PeerMetadata, RemoteHeads,
    PROTOCOL_VERSION,
};
