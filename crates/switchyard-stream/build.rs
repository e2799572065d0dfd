//! With the `demo` feature: compiles `proto/ledger.proto` with protox (a protobuf compiler in
//! Rust, so no system `protoc` is needed) and generates its tonic code.

fn main() {
    #[cfg(feature = "demo")]
    {
        println!("cargo:rerun-if-changed=proto/ledger.proto");
        let descriptors = protox::compile(["proto/ledger.proto"], ["proto"])
            .unwrap_or_else(|e| panic!("proto/ledger.proto does not compile: {e}"));
        tonic_prost_build::configure()
            .compile_fds(descriptors)
            .unwrap_or_else(|e| panic!("generating the ledger's tonic code failed: {e}"));
    }
}
