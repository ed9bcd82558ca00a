// Exists so that agent/build.rs can name this crate as a build-dependency
// (which makes cargo rebuild the agent when a kernel program changes).
#![no_std]
