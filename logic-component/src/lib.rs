//! The compiled logic component, embedded: every host and test runs these exact bytes.
//!
//! `build.rs` compiles `orchestrator-logic` for `wasm32-unknown-unknown` with the `component`
//! profile; a host may still load another version from a path (and hot-swap it).

/// Lowercase hex sha256 of [`COMPONENT`]: the identity of this logic version.
pub const SHA256: &str = include_str!(concat!(env!("OUT_DIR"), "/sha256.txt"));

/// The component (WebAssembly component-model binary).
pub const COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orchestrator_logic.wasm"));

#[cfg(test)]
mod tests {
    #[test]
    fn is_a_component() {
        // Component-model binaries carry layer 1 in the preamble: \0asm, version 0x0d, layer 1.
        assert_eq!(&super::COMPONENT[..4], b"\0asm");
        assert_eq!(&super::COMPONENT[4..8], &[0x0d, 0x00, 0x01, 0x00]);
    }
}
