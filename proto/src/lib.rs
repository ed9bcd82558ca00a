//! The `faultline.v1` wire contract: generated messages, client and server;
//! the names its kinds and enums go by (`names`), and compact constructors
//! of wire faults for tests and tools (`build`); user-given text made safe
//! for logs and terminals (`text`), shared by the agent and `faultctl`.

pub mod build;
pub mod names;
pub mod text;

#[expect(clippy::all, reason = "generated code")]
pub mod v1 {
    tonic::include_proto!("faultline.v1");

    /// Encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/faultline_v1_descriptor.bin"));
}
