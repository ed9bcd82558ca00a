//! The `faultline.v1` wire contract: generated messages, client and server.

#[expect(clippy::all, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("faultline.v1");

    /// Encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/faultline_v1_descriptor.bin"));
}
