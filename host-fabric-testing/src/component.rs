//! Logic components that behave like the embedded one but have other bytes, for the hot-swap
//! tests and benchmarks of both hosts: a custom section changes a component's sha256 and
//! nothing it does, so a swap can be observed without a second build of the logic.

/// `component` with a custom section `name` holding `payload` appended.
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(out: &mut Vec<u8>, mut value: usize) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut bytes = component.to_vec();
    // Section id 0 (custom), its size, its contents: valid anywhere after the header.
    bytes.push(0);
    leb128(&mut bytes, body.len());
    bytes.extend_from_slice(&body);
    bytes
}

/// The embedded component with the custom section `orchestrator-test-variant` holding `tag`:
/// one variant per tag, always the same bytes (so a precompiled cache serves it again).
pub fn variant(tag: &[u8]) -> Vec<u8> {
    with_custom_section(orchestrator_logic_component::COMPONENT, "orchestrator-test-variant", tag)
}
