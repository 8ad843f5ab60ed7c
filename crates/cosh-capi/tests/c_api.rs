//! The C API from C: the paper's pipe (`pipe_write`/`pipe_read`) and its file system's
//! `write_handler`/`read_handler`, written against `include/cosh.h`, compiled with gcc and
//! linked with the static library, run as separate processes with byte-for-byte checks; a
//! program that misuses every call and gets error codes back; all of them under valgrind where
//! it is installed; and a program built with what `pkg-config` says of an installed libcosh,
//! linked with the shared library.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where cargo put this crate's libraries: beside this test in `target/<profile>/deps` (a
/// library built for the test), or one up (one built by `cargo build`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let deps = exe.parent().expect("deps").to_path_buf();
    if deps.join("libcosh_capi.a").exists() {
        return deps;
    }
    deps.parent().map_or(deps.clone(), Path::to_path_buf)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A block manager on a thread of this process, and its socket.
fn block_manager(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cosh-capi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    cosh_sys::runtime::ensure_runtime_dir(&dir).expect("dir");
    let mut config = cosh_blockmgr::Config::host_at(&dir);
    config.socket = dir.join("host.sock");
    let socket = config.socket.clone();
    let manager = cosh_blockmgr::BlockManager::bind(config).expect("bind");
    std::thread::spawn(move || manager.run());
    socket
}

/// Compiles `tests/c/NAME.c` against cosh.h and the static library (as a program of its own
/// for each `tag`: tests run at once); `None` (with a message) where gcc is missing.
fn compile(name: &str, tag: &str) -> Option<PathBuf> {
    if !have("gcc") {
        eprintln!("skipped: gcc is not installed");
        return None;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = lib_dir().join("libcosh_capi.a");
    assert!(lib.exists(), "{} was not built", lib.display());
    let out = lib_dir().join(format!("c-{name}-{tag}"));
    let status = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(here.join("include"))
        .arg(here.join("tests/c").join(format!("{name}.c")))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .status()
        .expect("gcc");
    assert!(status.success(), "gcc failed on {name}.c");
    Some(out)
}

/// The command to run `program`, under valgrind when `checked`.
fn command(program: &Path, checked: bool) -> Command {
    if checked {
        let mut c = Command::new("valgrind");
        c.args([
            "-q",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,possible",
            "--show-leak-kinds=definite,possible",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn pipe(checked: bool, count: &str) {
    let tag = if checked { "pipe-vg" } else { "pipe" };
    let Some(prog) = compile("pipe", tag) else {
        return;
    };
    let socket = block_manager(tag);
    let consumer = command(&prog, checked)
        .arg(&socket)
        .args(["consumer", count])
        .stdout(Stdio::piped())
        .spawn()
        .expect("consumer");
    let producer = command(&prog, checked)
        .arg(&socket)
        .args(["producer", count])
        .stdout(Stdio::piped())
        .output()
        .expect("producer");
    let consumer = consumer.wait_with_output().expect("consumer");
    assert!(producer.status.success(), "producer: {:?}", producer.status);
    assert!(consumer.status.success(), "consumer: {:?}", consumer.status);
    assert_eq!(
        String::from_utf8_lossy(&producer.stdout),
        format!("sent {count}\n")
    );
    assert_eq!(
        String::from_utf8_lossy(&consumer.stdout),
        format!("received {count}\n")
    );
}

fn file_system(checked: bool, rounds: &str) {
    let tag = if checked { "fs-vg" } else { "fs" };
    let Some(prog) = compile("fs", tag) else {
        return;
    };
    let socket = block_manager(tag);
    let mut server = command(&prog, checked)
        .arg(&socket)
        .arg("server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let (to_server, from_server) = (
        server.stdin.take().expect("stdin"),
        server.stdout.take().expect("stdout"),
    );
    // The client's requests are the server's input, and the server's answers the client's.
    let client = command(&prog, checked)
        .arg(&socket)
        .args(["client", rounds])
        .stdin(Stdio::from(from_server))
        .stdout(Stdio::from(to_server))
        .stderr(Stdio::piped())
        .output()
        .expect("client");
    let server = server.wait().expect("server");
    let said = String::from_utf8_lossy(&client.stderr);
    assert!(
        client.status.success(),
        "client: {:?}: {said}",
        client.status
    );
    assert!(server.success(), "server: {server:?}");
    assert!(said.contains(&format!("{rounds} rounds exact")), "{said}");
}

fn misuse(checked: bool) {
    let tag = if checked { "misuse-vg" } else { "misuse" };
    let Some(prog) = compile("misuse", tag) else {
        return;
    };
    let socket = block_manager(tag);
    let out = command(&prog, checked)
        .arg(&socket)
        .output()
        .expect("misuse");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A block manager and a CoshFS service on threads of this process: their sockets.
fn file_service(tag: &str) -> (PathBuf, PathBuf) {
    let socket = block_manager(tag);
    let dir = socket.parent().expect("dir").to_path_buf();
    let domain =
        cosh::Domain::connect_with(&cosh::Options::new("coshfs").socket(&socket).no_spawn())
            .expect("connect");
    let service = dir.join("fs.sock");
    let server = cosh_fs::Server::with_domain(domain, &service).expect("serve");
    std::thread::spawn(move || server.run());
    (socket, service)
}

fn fs_client(checked: bool) {
    let tag = if checked { "fsclient-vg" } else { "fsclient" };
    let Some(prog) = compile("fsclient", tag) else {
        return;
    };
    let (socket, service) = file_service(tag);
    let out = command(&prog, checked)
        .arg(&socket)
        .arg(&service)
        .output()
        .expect("fsclient");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stream(checked: bool, mib: &str) {
    let tag = if checked { "stream-vg" } else { "stream" };
    let Some(prog) = compile("stream", tag) else {
        return;
    };
    let socket = block_manager(tag);
    let receiver = command(&prog, checked)
        .arg(&socket)
        .args(["s", "recv", mib])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver");
    let sender = command(&prog, checked)
        .arg(&socket)
        .args(["s", "send", mib])
        .output()
        .expect("sender");
    let receiver = receiver.wait_with_output().expect("receiver");
    let bytes = mib.parse::<u64>().expect("MiB") << 20;
    assert!(
        sender.status.success(),
        "sender: {}",
        String::from_utf8_lossy(&sender.stderr)
    );
    assert!(
        receiver.status.success(),
        "receiver: {}",
        String::from_utf8_lossy(&receiver.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&receiver.stdout),
        format!("received {bytes} bytes\n")
    );
}

#[test]
fn a_byte_stream_flows_between_two_c_processes_through_a_cosh_pipe() {
    stream(false, "24");
}

#[test]
fn a_c_program_uses_coshfs_through_the_file_calls() {
    fs_client(false);
}

#[test]
fn the_papers_pipe_runs_across_two_c_processes() {
    pipe(false, "200");
}

#[test]
fn the_papers_file_system_handlers_run_across_two_c_processes() {
    file_system(false, "50");
}

#[test]
fn bad_handles_wrong_rights_and_double_releases_are_error_codes() {
    misuse(false);
}

#[test]
fn the_c_programs_run_clean_under_valgrind() {
    if !have("valgrind") {
        eprintln!("skipped: valgrind is not installed");
        return;
    }
    misuse(true);
    pipe(true, "20");
    file_system(true, "5");
    fs_client(true);
    stream(true, "2");
}

#[test]
fn installed_with_pkg_config_a_program_builds_against_the_shared_library() {
    if !have("gcc") || !have("pkg-config") {
        eprintln!("skipped: gcc or pkg-config is not installed");
        return;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefix = std::env::temp_dir().join(format!("cosh-capi-prefix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let installed = Command::new(here.join("install.sh"))
        .arg(&prefix)
        .env("COSH_LIB_DIR", lib_dir())
        .output()
        .expect("install.sh");
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "cosh"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config");
    assert!(flags.status.success(), "pkg-config does not know cosh");
    let flags = String::from_utf8_lossy(&flags.stdout).to_string();
    assert!(flags.contains("-lcosh"), "{flags}");
    let prog = prefix.join("misuse");
    let built = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Werror"])
        .arg(here.join("tests/c/misuse.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&prog)
        .status()
        .expect("gcc");
    assert!(built.success(), "gcc with {flags}");
    // The program names the library by its soname, found where it was installed.
    let socket = block_manager("installed");
    let out = Command::new(&prog)
        .arg(&socket)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&prefix);
}
