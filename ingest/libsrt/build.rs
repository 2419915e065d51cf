//! Links the system's libsrt (Debian: libsrt-openssl-dev, installed by scripts/setup.sh) and
//! compiles the C shim that reads libsrt's statistics struct with the compiler's own layout.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    let include = ["/usr/include", "/usr/local/include"]
        .into_iter()
        .find(|d| std::path::Path::new(d).join("srt/srt.h").exists());
    let Some(include) = include else {
        panic!(
            "srt/srt.h not found: install libsrt's development files \
             (Debian: apt-get install libsrt-openssl-dev; scripts/setup.sh does it)"
        );
    };
    cc::Build::new()
        .file("src/shim.c")
        .include(include)
        .warnings(true)
        .compile("jtsrtshim");
    println!("cargo:rustc-link-lib=srt");
}
