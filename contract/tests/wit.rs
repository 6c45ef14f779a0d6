//! The WIT world and the contract's table name the same error kinds in the same order.

use orchestrator_contract::ErrorKind;

/// The cases of `enum error-kind { ... }` in `wit/orchestrator.wit`, in order.
fn wit_error_kinds() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/orchestrator.wit");
    let wit = std::fs::read_to_string(path).expect("read wit/orchestrator.wit");
    let start = wit.find("enum error-kind {").expect("the WIT declares enum error-kind");
    let body = &wit[start..];
    let body = &body[body.find('{').expect("opening brace") + 1..body.find('}').expect("closing brace")];
    body.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .map(|line| line.trim_end_matches(',').to_owned())
        .collect()
}

#[test]
fn the_table_lists_the_wit_error_kinds_in_order() {
    let table: Vec<String> = ErrorKind::ALL.iter().map(|kind| kind.wit_name().to_owned()).collect();
    assert_eq!(table, wit_error_kinds());
}
