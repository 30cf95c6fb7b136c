//! include/tessera.h is what cbindgen generates from src/capi now (like ptx/, checked fresh in
//! CI). `TESSERA_BLESS=1 cargo test --release --test header` rewrites it.

#[test]
fn header_is_fresh() {
    let root = env!("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(format!("{root}/cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(format!("{root}/src/capi/mod.rs"))
        .generate()
        .expect("cbindgen parses src/capi");
    let mut want = Vec::new();
    bindings.write(&mut want);
    let want = String::from_utf8(want).expect("utf-8 header");
    let path = format!("{root}/include/tessera.h");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want && std::env::var("TESSERA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write include/tessera.h");
        return;
    }
    assert!(
        have == want,
        "include/tessera.h is stale: run `TESSERA_BLESS=1 cargo test --release --test header`"
    );
    // Every op of the table has its function.
    for op in tessera::ops::table::OPS {
        let f = tessera::capi::codegen::function_name(op);
        assert!(
            want.contains(&format!("{f}(")),
            "{f} missing from the header"
        );
    }
    for f in [
        "tessera_last_error",
        "tessera_version",
        "tessera_set_host_executor",
    ] {
        assert!(
            want.contains(&format!("{f}(")),
            "{f} missing from the header"
        );
    }
}
