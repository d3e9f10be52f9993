//! The finderd wire contract (`finderd/v1/finderd.proto`) as Rust types, a
//! tonic client and a tonic server trait, and its descriptor set. Nothing
//! else lives in this crate.

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("finderd.v1");

    /// The encoded `FileDescriptorSet` of the protocol, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("finderd_descriptor");

    /// The protocol version this crate speaks.
    pub const PROTOCOL_VERSION: u32 = ProtocolVersion::ProtocolVersion1 as u32;
}

/// Field numbers and enum values as the descriptor set declares them, for
/// code that encodes or decodes by hand (the daemon's pre-encoded replies,
/// the C client's header): tests check their constants against these.
pub mod descriptor {
    use prost::Message;
    use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

    /// The decoded descriptor set of `finderd/v1/finderd.proto`.
    pub fn finderd() -> Result<FileDescriptorSet, prost::DecodeError> {
        FileDescriptorSet::decode(super::v1::FILE_DESCRIPTOR_SET)
    }

    /// The number of `field` in `message` (full name, e.g.
    /// `finderd.v1.SnapshotReply`) in `set`.
    pub fn field_number(set: &FileDescriptorSet, message: &str, field: &str) -> Option<u32> {
        let message = messages(set).find(|(name, _)| name == message)?.1;
        let field = message.field.iter().find(|f| f.name() == field)?;
        u32::try_from(field.number()).ok()
    }

    /// The number of `value` in `enumeration` (full name, e.g.
    /// `finderd.v1.EntryKind`) in `set`.
    pub fn enum_value(set: &FileDescriptorSet, enumeration: &str, value: &str) -> Option<i32> {
        let enumeration = enums(set).find(|(name, _)| name == enumeration)?.1;
        let value = enumeration.value.iter().find(|v| v.name() == value)?;
        Some(value.number())
    }

    /// Every message of `set` with its full name (without the leading
    /// dot), nested ones after their parent, in declaration order.
    pub fn messages(set: &FileDescriptorSet) -> impl Iterator<Item = (String, &DescriptorProto)> {
        set.file.iter().flat_map(|file| {
            let mut found = Vec::new();
            for message in &file.message_type {
                nested(file.package(), message, &mut found);
            }
            found
        })
    }

    /// Every enum of `set` with its full name, top-level ones first.
    pub fn enums(set: &FileDescriptorSet) -> impl Iterator<Item = (String, &EnumDescriptorProto)> {
        let top = set.file.iter().flat_map(|file| {
            file.enum_type
                .iter()
                .map(move |e| (format!("{}.{}", file.package(), e.name()), e))
        });
        let inner = messages(set).flat_map(|(parent, message)| {
            message
                .enum_type
                .iter()
                .map(move |e| (format!("{parent}.{}", e.name()), e))
        });
        top.chain(inner)
    }

    fn nested<'a>(
        scope: &str,
        message: &'a DescriptorProto,
        found: &mut Vec<(String, &'a DescriptorProto)>,
    ) {
        let name = format!("{scope}.{}", message.name());
        found.push((name.clone(), message));
        for inner in &message.nested_type {
            nested(&name, inner, found);
        }
    }
}
