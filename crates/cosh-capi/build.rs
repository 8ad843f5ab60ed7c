//! Gives the shared library the name C programs link it by: `libcosh.so.0` (installed with a
//! `libcosh.so` link by `install.sh`), whatever cargo calls the file it builds.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcosh.so.0");
}
