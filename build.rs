//! Bakes an rpath to the venv's libtorch into every binary, test and bench of this package, so
//! `target/release/dp-bench` starts without `LD_LIBRARY_PATH` (torch-sys links but sets no rpath).
use std::path::PathBuf;

/// The one libtorch kernel tch does not bind (optim/aten.rs calls it).
const FUSED_ADAMW: &str = "src/optim/fused_adamw.cpp";
/// Setting the current CUDA device through libtorch (dist/gpus.rs calls it).
const CUDA_DEVICE: &str = "src/dist/cuda_device.cpp";

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={FUSED_ADAMW}");
    println!("cargo:rerun-if-changed={CUDA_DEVICE}");
    let libtorch = std::env::var_os("LIBTORCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/libtorch"));
    // Resolve the .venv/libtorch link so the rpath survives the link being re-made.
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let lib = libtorch.join("lib");
    if !lib.join("libtorch_cpu.so").exists() {
        println!(
            "cargo:warning=no libtorch_cpu.so under {}: run scripts/setup.sh first",
            lib.display()
        );
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    // Compiled as torch-sys compiles its own wrapper (C++17, the libtorch's C++ ABI), against
    // ATen's headers only.
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(libtorch.join("include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
        ))
        .file(FUSED_ADAMW)
        .file(CUDA_DEVICE)
        .compile("dp_bench_aten");
    // The torch package's version.py says which libtorch this is; run.json records it.
    let version = std::fs::read_to_string(libtorch.join("version.py"))
        .ok()
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|s| s.trim().trim_matches(['\'', '"']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DP_BENCH_LIBTORCH_VERSION={version}");
    // Keep libtorch_cuda in the dependency list even though no symbol of it is used directly, so
    // `--device cuda` finds the CUDA backend when the libtorch has one.
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
