//! The README's emulated-functions table is the one in code.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

#[test]
fn the_readme_table_is_generated_from_the_catalog() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = readme.find("<!-- emulated-functions:begin -->\n").expect("begin marker") + "<!-- emulated-functions:begin -->\n".len();
    let end = readme.find("<!-- emulated-functions:end -->").expect("end marker");
    assert_eq!(&readme[begin..end], fltemu::catalog::markdown(), "regenerate with `fltemu exports --markdown`");
}

#[test]
fn every_emulated_export_has_a_catalog_row() {
    let rows: Vec<String> = fltemu::catalog::all().iter().map(|e| format!("{}!{}", e.dll, e.function)).collect();
    for export in fltemu::emulated_exports() {
        assert!(rows.contains(&export), "{export} has no row in the catalog");
    }
}
