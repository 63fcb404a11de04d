//! One test run inside private network and mount namespaces, so that it can stand
//! addresses in for public hosts and answer name lookups itself.
//!
//! The outer test calls [`run_inside`] with the name of an `#[ignore]`d inner test of the
//! same binary. The inner test starts with `if !testkit::netns::inside() { return; }`.
//! Inside, `lo` is up and carries the asked-for extra addresses (traffic to them never
//! leaves the namespace), and `/etc/hosts` can be replaced with [`HostsFile`], whose
//! contents the test may change at any time (getaddrinfo reads the file on each lookup).
//!
//! Needs root and util-linux `unshare`, iproute2 `ip` and `mount`.
//!
//! ```no_run
//! #[test]
//! fn outer() {
//!     testkit::netns::run_inside("inner", &["11.0.0.1".parse().unwrap()]);
//! }
//!
//! #[test]
//! #[ignore = "runs inside a private network namespace, started by `outer`"]
//! fn inner() {
//!     if !testkit::netns::inside() {
//!         return;
//!     }
//!     let hosts = testkit::netns::HostsFile::install("11.0.0.1 imap.test\n");
//!     // ... connect to imap.test ...
//!     hosts.set("127.0.0.1 imap.test\n");
//! }
//! ```

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

/// Set in the environment of the inner run.
pub const INNER_ENV: &str = "TESTKIT_NETNS_INNER";

/// True inside the namespaces made by [`run_inside`].
pub fn inside() -> bool {
    std::env::var_os(INNER_ENV).is_some()
}

/// Runs test `name` of the current test binary in fresh network and mount namespaces with
/// `lo` up and `addrs` added to it. Returns the inner run's output; panics with that output
/// if the inner run failed or ran no test.
pub fn run_inside(name: &str, addrs: &[IpAddr]) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut script = String::from("set -e; ip link set lo up; ");
    for addr in addrs {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        script.push_str(&format!("ip addr add {addr}/{prefix} dev lo; "));
    }
    script.push_str("exec \"$0\" --exact \"$1\" --include-ignored --nocapture --test-threads=1");
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--", "sh", "-c", &script])
        .arg(&exe)
        .arg(name)
        .env(INNER_ENV, "1")
        .output()
        .expect("unshare runs (util-linux; needs root)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner run of {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "inner run of {name} ran no test:\n{text}"
    );
    text
}

/// A private `/etc/hosts` for this mount namespace: a temporary file bind-mounted over it.
/// Only call it inside [`run_inside`]'s namespaces, where the mount is private.
pub struct HostsFile {
    path: PathBuf,
}

impl HostsFile {
    /// Bind-mounts a file with `contents` over `/etc/hosts`.
    pub fn install(contents: &str) -> HostsFile {
        assert!(inside(), "HostsFile only inside testkit::netns::run_inside");
        let path = std::env::temp_dir().join(format!("testkit-hosts-{}", std::process::id()));
        std::fs::write(&path, contents).expect("write the private hosts file");
        let status = Command::new("mount")
            .args(["--bind"])
            .arg(&path)
            .arg("/etc/hosts")
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount --bind over /etc/hosts failed");
        HostsFile { path }
    }

    /// Replaces the contents in place (the bind mount follows the inode, not the name).
    pub fn set(&self, contents: &str) {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .expect("open the private hosts file");
        file.write_all(contents.as_bytes())
            .expect("write the private hosts file");
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("/etc/hosts").status();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Any file of this mount namespace replaced by a private one: a temporary file
/// bind-mounted over `target` (for instance `/etc/resolv.conf`, to point name lookups at
/// a name server the test controls). Only call it inside [`run_inside`]'s namespaces,
/// where the mount is private; the mount goes when the value is dropped.
pub struct MountedFile {
    path: PathBuf,
    target: PathBuf,
}

impl MountedFile {
    /// Bind-mounts a file with `contents` over `target`, which must exist.
    pub fn install(target: impl Into<PathBuf>, contents: &str) -> MountedFile {
        assert!(
            inside(),
            "MountedFile only inside testkit::netns::run_inside"
        );
        let target = target.into();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "testkit-mounted-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).expect("write the private file");
        let status = Command::new("mount")
            .args(["--bind"])
            .arg(&path)
            .arg(&target)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount --bind over {target:?} failed");
        MountedFile { path, target }
    }

    /// Replaces the contents in place (the bind mount follows the inode, not the name).
    pub fn set(&self, contents: &str) {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .expect("open the private file");
        file.write_all(contents.as_bytes())
            .expect("write the private file");
    }
}

impl Drop for MountedFile {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
        let _ = std::fs::remove_file(&self.path);
    }
}
