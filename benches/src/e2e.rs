//! End-to-end plumbing: the server, mock IMAP processes, the push sink.
