//! The finderd wire contract (`finderd/v1/finderd.proto`) as Rust types, a
//! tonic client and a tonic server trait. Nothing else lives in this crate.

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("finderd.v1");

    /// The encoded `FileDescriptorSet` of the protocol, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("finderd_descriptor");

    /// The protocol version this crate speaks.
    pub const PROTOCOL_VERSION: u32 = ProtocolVersion::ProtocolVersion1 as u32;
}
