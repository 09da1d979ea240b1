//! Gives the `promptad` binaries a RUNPATH to the libtorch they were built against and links
//! `libtorch.so` (which needs `libtorch_cuda.so` in the CUDA wheels) even though no symbol of it is
//! referenced directly: without `--no-as-needed` the linker drops it and CUDA is never seen.
//! See `../shared/reference/openclip-vit-b-16-plus-240.md` §5.4 and tch-rs#980.
//!
//! It also records which libtorch that was (`PROMPTAD_BUILT_TORCH_VERSION`), so that `promptad
//! doctor` and every worker can refuse a different one at run time: a mismatch does not fail
//! cleanly, it computes wrong results or crashes (`ecosystem.md` §6).
use std::path::Path;

#[path = "src/torch_version.rs"]
mod torch_version;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/torch_version.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = Path::new(&lib);
        println!("cargo:rustc-env=PROMPTAD_BUILT_TORCH_LIB={}", lib.display());
        if let Some(version) = lib.parent().and_then(torch_version::read) {
            println!("cargo:rustc-env=PROMPTAD_BUILT_TORCH_VERSION={version}");
        }
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
            println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib.display());
        }
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
