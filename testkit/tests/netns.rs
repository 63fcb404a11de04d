//! The namespace helper: an extra address on `lo` is reachable, and the private hosts
//! file answers name lookups and can change between them.

use std::net::{IpAddr, TcpListener, TcpStream, ToSocketAddrs};

use testkit::netns::{self, HostsFile};

const STAND_IN: &str = "11.0.0.1";

#[test]
fn a_stand_in_address_and_a_private_hosts_file() {
    let out = netns::run_inside("inner", &[STAND_IN.parse().unwrap()]);
    assert!(out.contains("resolved twice"), "{out}");
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner() {
    if !netns::inside() {
        return;
    }
    let listener = TcpListener::bind((STAND_IN, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    TcpStream::connect((STAND_IN, port)).unwrap();
    let hosts = HostsFile::install(&format!("{STAND_IN} imap.test\n"));
    let first: Vec<IpAddr> = ("imap.test", 1)
        .to_socket_addrs()
        .unwrap()
        .map(|a| a.ip())
        .collect();
    assert_eq!(first, [STAND_IN.parse::<IpAddr>().unwrap()]);
    hosts.set("127.0.0.1 imap.test\n");
    let second: Vec<IpAddr> = ("imap.test", 1)
        .to_socket_addrs()
        .unwrap()
        .map(|a| a.ip())
        .collect();
    assert_eq!(second, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    println!("resolved twice");
}
