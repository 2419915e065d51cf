//! Embeds the built web bundle (`dist/`) when it exists. Building it needs Node
//! (`scripts/build-web.sh`); without it the crate still builds and `/player.js` says how to
//! build it, so `cargo build` never needs Node.

use std::path::Path;

fn main() {
    // Read when the script runs, not baked in when it was compiled: a build script binary
    // can outlive the checkout it was compiled in (a target directory shared by worktrees).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dist = Path::new(&manifest).join("dist");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("player.js");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!(
        "cargo:rerun-if-changed={}",
        dist.join("player.js").display()
    );
    println!("cargo::rustc-check-cfg=cfg(player_bundle)");
    match std::fs::read(dist.join("player.js")) {
        Ok(bytes) => {
            std::fs::write(&out, bytes).expect("write bundle");
            println!("cargo:rustc-cfg=player_bundle");
        }
        Err(_) => {
            std::fs::write(&out, b"").expect("write placeholder");
            println!(
                "cargo:warning=player-web/dist/player.js not built; /player.js will say how to build it (scripts/build-web.sh)"
            );
        }
    }
}
